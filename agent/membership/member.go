// Package membership is the agent's side of the Serf gossip pool: one member named by
// the machine id, with small tags (kind, id, state, step, version) that the coordinators
// watch, and an ear for the "rivet-plan-changed" query that makes the agent poll now.
package membership

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/rivetmetal/rivet/internal/gossip"
	"github.com/rivetmetal/rivet/shared"
)

// DefaultBindAddr is where the agent gossips unless configured otherwise.
const DefaultBindAddr = gossip.DefaultBindAddr

// Config configures the agent's member.
type Config struct {
	ID            shared.MachineID
	BindAddr      string      // host:port (UDP and TCP); DefaultBindAddr when empty; port 0 picks one
	AdvertiseAddr string      // "ip" or "ip:port" the coordinators reach us at; derived when empty
	Key           string      // base64 32-byte gossip key from the coordinator; required
	Tags          shared.Tags // initial tags; Kind and MachineID are filled in
	Logger        *slog.Logger
	// DeadNodeReclaim: how long before a failed member's name may come back from a new
	// address. Zero means 30s.
	DeadNodeReclaim time.Duration
}

// Member is the agent's running pool member.
type Member struct {
	id     shared.MachineID
	serf   *serf.Serf
	events chan serf.Event
	nudges chan struct{}
	log    *slog.Logger

	tagMu   sync.Mutex
	current shared.Tags // last tags asked for
	tagWake chan struct{}

	ctx        context.Context // cancelled by Shutdown
	stop       context.CancelFunc
	stopOnce   sync.Once
	done       sync.WaitGroup
	reaffirmed sync.Once
}

// reaffirmAfter is how long after its first join a member joins once more. A machine
// that left the pool before a reboot rejoins under the same name; if the peers it first
// syncs with have not yet seen that leave, its join intent carries an older Lamport time
// than the leave, and a coordinator that gets the leave later keeps it "leaving" for good
// (Serf ignores the older join). The second join, long after the leave has spread,
// carries a newer time and wins.
const reaffirmAfter = 10 * time.Second

// Start creates the member. It joins nobody yet: call Join with GossipInfo.Addrs.
func Start(cfg Config) (*Member, error) {
	if err := cfg.ID.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	tags := cfg.Tags
	tags.Kind, tags.MachineID = shared.KindAgent, cfg.ID
	if err := tags.Validate(); err != nil {
		return nil, fmt.Errorf("gossip tags: %w", err)
	}
	conf, err := gossip.SerfConfig(gossip.Node{Name: string(cfg.ID), Key: cfg.Key, BindAddr: cfg.BindAddr,
		AdvertiseAddr: cfg.AdvertiseAddr, DeadNodeReclaim: cfg.DeadNodeReclaim, Logger: logger})
	if err != nil {
		return nil, err
	}
	conf.Tags = tags.Map()
	events := make(chan serf.Event, 64)
	conf.EventCh = events
	s, err := serf.Create(conf)
	if err != nil {
		return nil, fmt.Errorf("starting gossip on %s:%d: %w (is the port free? set --gossip-bind)",
			conf.MemberlistConfig.BindAddr, conf.MemberlistConfig.BindPort, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Member{
		id: cfg.ID, serf: s, events: events, log: logger,
		nudges: make(chan struct{}, 1), tagWake: make(chan struct{}, 1),
		current: tags, ctx: ctx, stop: cancel,
	}
	m.done.Add(2)
	go func() { defer m.done.Done(); m.readEvents(ctx) }()
	go func() { defer m.done.Done(); m.applyTags(ctx) }()
	return m, nil
}

// Join contacts the coordinators (host:port). It returns how many answered; an error
// only when none did.
func (m *Member) Join(addrs []string) (int, error) {
	n, err := m.serf.Join(addrs, true)
	if err != nil {
		return n, fmt.Errorf("joining gossip via %v: %w (firewall on the gossip port? the coordinator's key?)", addrs, err)
	}
	m.reaffirmed.Do(func() {
		m.done.Add(1)
		go func() { defer m.done.Done(); m.reaffirm(addrs) }()
	})
	return n, nil
}

// reaffirm joins once more after reaffirmAfter (see there).
func (m *Member) reaffirm(addrs []string) {
	t := time.NewTimer(reaffirmAfter)
	defer t.Stop()
	select {
	case <-m.ctx.Done():
		return
	case <-t.C:
	}
	if _, err := m.serf.Join(addrs, true); err != nil {
		m.log.Debug("gossip: second join", "err", err)
	}
}

// SetTags publishes new state and step tags. It returns at once: the broadcast, which
// can wait seconds for the pool, happens in the background and the newest tags win.
func (m *Member) SetTags(t shared.Tags) error {
	t.Kind, t.MachineID = shared.KindAgent, m.id
	if err := t.Validate(); err != nil {
		return err
	}
	m.tagMu.Lock()
	changed := m.current != t
	m.current = t
	m.tagMu.Unlock()
	if changed {
		select {
		case m.tagWake <- struct{}{}:
		default:
		}
	}
	return nil
}

// Tags returns the tags last asked for.
func (m *Member) Tags() shared.Tags {
	m.tagMu.Lock()
	defer m.tagMu.Unlock()
	return m.current
}

func (m *Member) applyTags(ctx context.Context) {
	var applied map[string]string
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.tagWake:
		}
		want := m.Tags().Map()
		if applied != nil && mapsEqual(applied, want) {
			continue
		}
		if err := m.serf.SetTags(want); err != nil {
			// The local tags are set even when the broadcast timed out; gossip catches up.
			m.log.Debug("gossip tag broadcast", "err", err)
		}
		applied = want
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Nudges delivers a value when a coordinator said this machine's plan changed. Several
// nudges before the agent looks collapse into one.
func (m *Member) Nudges() <-chan struct{} { return m.nudges }

// readEvents drains Serf's channel (Serf blocks while it is full) and keeps only the
// nudges; member events are the coordinators' business.
func (m *Member) readEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-m.events:
			q, ok := ev.(*serf.Query)
			if !ok || q.Name != gossip.QueryPlanChanged {
				continue
			}
			m.log.Debug("plan-changed nudge", "from", q.SourceNode())
			select {
			case m.nudges <- struct{}{}:
			default:
			}
		}
	}
}

// Counts returns the number of pool members by status ("alive", "failed", ...).
func (m *Member) Counts() map[string]int {
	counts := map[string]int{}
	for _, mem := range m.serf.Members() {
		counts[mem.Status.String()]++
	}
	return counts
}

// CoordinatorsAlive counts the alive coordinators this member sees. Zero means the
// agent should join again (after every coordinator restarted, say).
func (m *Member) CoordinatorsAlive() int {
	n := 0
	for _, mem := range m.serf.Members() {
		if mem.Status != serf.StatusAlive || mem.Name == string(m.id) {
			continue
		}
		if t, err := shared.ParseTags(mem.Tags); err == nil && t.Kind == shared.KindCoordinator {
			n++
		}
	}
	return n
}

// Members lists the pool as this agent sees it, members with unusable tags left out.
func (m *Member) Members() []shared.SerfMember {
	return gossip.Members(m.serf)
}

// LocalAddr is the advertised gossip host:port.
func (m *Member) LocalAddr() string {
	return gossip.MemberAddr(m.serf.LocalMember())
}

// Stopped is closed when gossip stopped, by Shutdown or on its own: Serf shuts a member
// down when it loses a name conflict, i.e. another machine gossips with the same id.
func (m *Member) Stopped() <-chan struct{} { return m.serf.ShutdownCh() }

// Leave tells the pool this machine is going away on purpose (the coordinators record
// "left", not "failed"). Call Shutdown afterwards.
func (m *Member) Leave() error { return m.serf.Leave() }

// Shutdown stops gossip. Without Leave first, the pool sees this machine fail.
func (m *Member) Shutdown() error {
	var err error
	m.stopOnce.Do(func() {
		err = m.serf.Shutdown()
		m.stop()
		m.done.Wait()
	})
	return err
}
