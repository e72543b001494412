// Package membership is the coordinator's side of the Serf gossip pool. Every
// coordinator runs one member (tags: kind coordinator, its API address); agents join it
// with the key handed out at registration. Member events become calls on a Recorder,
// which the coordinator turns into timeline events and the "lost" hint. Gossip is a
// hint only: nothing here ever asks for a machine to be re-provisioned.
//
// Failure detection uses memberlist's LAN defaults (probe every 1s, 500ms probe timeout,
// suspicion 4 × log10(n) probe intervals, at least one interval, shortened by
// confirmations from other members). Measured on loopback with 6 members: 6–8 s from a
// kill to Recorder.MachineLost. At 200 members the suspicion floor is about 9 s, so
// expect 10–15 s, and up to about a minute when too few members confirm the suspicion.
//
// The pool is always encrypted (AES-256, GossipVerifyIncoming/Outgoing): a member
// without the key cannot join, and one with another pool's key neither.
package membership

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/rivetmetal/rivet/internal/gossip"
	"github.com/rivetmetal/rivet/shared"
)

// DefaultBindAddr is where the pool listens (UDP and TCP) unless told otherwise.
const DefaultBindAddr = gossip.DefaultBindAddr

// Reasons passed to Recorder.MachineLost.
const (
	ReasonFailed = "failed" // failure detection gave up on the member (power loss, crash, reboot)
	ReasonLeft   = "left"   // the agent left gracefully (service stopped, machine shut down)
)

// Recorder receives what gossip says about machines. Both calls are hints, called on every
// coordinator: an implementation that is not the Raft leader should return nil (the new
// leader calls Pool.Reconcile). An error means "try again": the pool retries with backoff
// until the call succeeds or a newer event for the machine replaces it. Calls for one
// machine come in gossip order, repeats suppressed; a graceful leave can arrive as
// MachineLost(failed) followed by MachineLost(left) when Serf learns of the departure
// before the leave intent.
type Recorder interface {
	MachineAlive(ctx context.Context, id shared.MachineID, addr string) error
	MachineLost(ctx context.Context, id shared.MachineID, reason string) error
}

// Config configures a coordinator's pool member.
type Config struct {
	NodeName      string // the coordinator's id, unique in the pool
	BindAddr      string // host:port for gossip (UDP and TCP); DefaultBindAddr when empty; port 0 picks one
	AdvertiseAddr string // "ip" or "ip:port" other members reach us at; derived from the bind when empty
	APIAddr       string // host:port of this coordinator's API, gossiped in the "api" tag
	Key           string // base64 32-byte gossip key (GenerateKey); required
	// SnapshotPath, when set, lets Serf remember the pool across restarts and rejoin it.
	SnapshotPath string
	Recorder     Recorder
	Logger       *slog.Logger
	// DeadNodeReclaim is how long after a member failed its name may come back from a new
	// address (a reinstalled machine can get a new DHCP lease). Zero means 30s.
	DeadNodeReclaim time.Duration
}

// Pool is a running coordinator member of the gossip pool.
type Pool struct {
	serf   *serf.Serf
	events chan serf.Event
	log    *slog.Logger
	rec    *dispatcher

	mu     sync.Mutex
	known  map[shared.MachineID]hint // last hint queued per machine
	warned map[string]bool           // members whose tags did not parse, logged once

	stop     context.CancelFunc
	stopOnce sync.Once
	done     sync.WaitGroup
}

// Start creates the coordinator's member and starts turning events into Recorder calls.
// It does not join anyone: call Join with the other coordinators' gossip addresses.
func Start(cfg Config) (*Pool, error) {
	if err := shared.ValidateName("coordinator", cfg.NodeName); err != nil {
		return nil, err
	}
	if cfg.Recorder == nil {
		return nil, fmt.Errorf("membership: no Recorder")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	tags := shared.Tags{Kind: shared.KindCoordinator, API: cfg.APIAddr, Version: shared.Version}
	if err := tags.Validate(); err != nil {
		return nil, fmt.Errorf("coordinator gossip tags: %w", err)
	}
	conf, err := gossip.SerfConfig(gossip.Node{Name: cfg.NodeName, Key: cfg.Key, BindAddr: cfg.BindAddr,
		AdvertiseAddr: cfg.AdvertiseAddr, DeadNodeReclaim: cfg.DeadNodeReclaim, Logger: logger})
	if err != nil {
		return nil, err
	}
	conf.SnapshotPath = cfg.SnapshotPath
	conf.RejoinAfterLeave = true // a restarted coordinator comes back even after a clean stop
	conf.Tags = tags.Map()
	events := make(chan serf.Event, 256)
	conf.EventCh = events
	s, err := serf.Create(conf)
	if err != nil {
		return nil, fmt.Errorf("starting gossip on %s: %w (is the port free?)", conf.MemberlistConfig.BindAddr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		serf: s, events: events, log: logger,
		known: map[shared.MachineID]hint{}, warned: map[string]bool{},
		stop: cancel,
	}
	p.rec = newDispatcher(cfg.Recorder, logger)
	p.done.Add(2)
	go func() { defer p.done.Done(); p.readEvents(ctx) }()
	go func() { defer p.done.Done(); p.rec.run(ctx) }()
	logger.Info("gossip pool started", "node", cfg.NodeName, "addr", p.LocalAddr())
	return p, nil
}

// Join contacts members of an existing pool (other coordinators, host:port). It returns
// how many answered; an error only when none did.
func (p *Pool) Join(addrs []string) (int, error) {
	self := p.LocalAddr()
	others := slices.DeleteFunc(slices.Clone(addrs), func(a string) bool { return a == self })
	if len(others) == 0 {
		return 0, nil
	}
	n, err := p.serf.Join(others, true)
	if err != nil {
		return n, fmt.Errorf("joining gossip pool via %v: %w (same gossip key on every coordinator? port reachable?)", others, err)
	}
	return n, nil
}

// LocalAddr is this member's advertised gossip host:port.
func (p *Pool) LocalAddr() string {
	return gossip.MemberAddr(p.serf.LocalMember())
}

// Members lists the pool, sorted by name. Members whose tags do not parse are left out
// (they were logged once when they appeared).
func (p *Pool) Members() []shared.SerfMember {
	return gossip.Members(p.serf)
}

// GossipAddrs returns the gossip host:port of every alive coordinator, this one included:
// what GossipInfo.Addrs tells a registering agent.
func (p *Pool) GossipAddrs() []string {
	var addrs []string
	for _, m := range p.Members() {
		if m.Tags.Kind == shared.KindCoordinator && m.Status == serf.StatusAlive.String() {
			addrs = append(addrs, m.Addr)
		}
	}
	return addrs
}

// Leave announces that this coordinator is going away, so that others mark it left
// rather than failed. Call Shutdown afterwards.
func (p *Pool) Leave() error { return p.serf.Leave() }

// Shutdown stops gossip and the event handling. Without Leave first, the others see
// this coordinator fail. Safe to call more than once.
func (p *Pool) Shutdown() error {
	var err error
	p.stopOnce.Do(func() {
		err = p.serf.Shutdown()
		p.stop()
		p.done.Wait()
	})
	return err
}
