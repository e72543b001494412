// Package fleetsim simulates a fleet of machines in one process for `rivet-bench fleet`
// and the fleet integration test. Each machine speaks the real API through the real
// typed client (its own HTTPS connection and machine token), runs its plan with the
// agent's real step runner (progress throttling, report retries, acknowledgements), and
// may join the real Serf pool with the agent's membership package. Only the work inside a
// step is simulated: executors sleep with progress instead of writing disks or calling
// dockerd.
package fleetsim

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/ctxtime"
	"github.com/rivetmetal/rivet/shared"
)

// Config describes the fleet and where its coordinators are.
type Config struct {
	URLs          []string // coordinator API URLs, in the order agents get them (rivet.url)
	CAFingerprint string
	EnrolToken    string
	Machines      int
	// FirstIndex offsets the machines' hardware identities, so two fleets never share ids.
	FirstIndex int
	// Addr gives machine i its IP and its gossip bind address (host:port; port 0 picks
	// one); an empty bind address means the machine does not gossip.
	Addr func(i int) (ip, gossipBind string)
	// PowerOn is when machine i powers on, counted from Run's start.
	PowerOn      func(i int) time.Duration
	Durations    Durations
	PollInterval time.Duration // the agent's poll interval; default 15s as the agent's
	Racks        int           // machines are labelled rack=r0..r(Racks-1), round-robin
	// JournalDir holds each machine's step journal (RAM and installed OS apart), as the
	// agent keeps one: a tmpfs such as /dev/shm keeps it cheap. Empty keeps journals in
	// memory for one run of a phase only, which lets a stale plan read re-run a step.
	JournalDir string
	// BurstRoute: machines numbered below it record their registration as
	// "register_burst", so a burst's latency is reported apart.
	BurstRoute int
}

// Fleet is a running simulated fleet.
type Fleet struct {
	cfg      Config
	stats    *Stats
	machines []*Machine

	gossipMu   sync.Mutex
	lastGossip time.Time
}

// New returns a fleet for cfg; Run starts it.
func New(cfg Config) (*Fleet, error) {
	if len(cfg.URLs) == 0 || cfg.CAFingerprint == "" || cfg.EnrolToken == "" {
		return nil, errors.New("fleetsim: URLs, CAFingerprint and EnrolToken are required")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 15 * time.Second
	}
	if cfg.Addr == nil {
		cfg.Addr = func(int) (string, string) { return "127.0.0.1", "" }
	}
	if cfg.PowerOn == nil {
		cfg.PowerOn = func(int) time.Duration { return 0 }
	}
	if cfg.Durations == (Durations{}) {
		cfg.Durations = DefaultDurations()
	}
	f := &Fleet{cfg: cfg, stats: NewStats()}
	for i := range cfg.Machines {
		f.machines = append(f.machines, &Machine{Index: i, fleet: f})
	}
	return f, nil
}

// Stats are the fleet's API figures and milestones.
func (f *Fleet) Stats() *Stats { return f.stats }

// Machines returns the fleet's machines (their ids are set once registered).
func (f *Fleet) Machines() []*Machine { return f.machines }

// LastGossipJoin is when the last machine first joined the Serf pool.
func (f *Fleet) LastGossipJoin() time.Time {
	f.gossipMu.Lock()
	defer f.gossipMu.Unlock()
	return f.lastGossip
}

func (f *Fleet) gossipJoined() {
	f.gossipMu.Lock()
	f.lastGossip = time.Now()
	f.gossipMu.Unlock()
	f.stats.milestone(MilestoneGossip)
}

// Run powers the machines on as cfg.PowerOn says and runs them until ctx ends; it
// returns when every machine has stopped (gossip left, connections idle).
func (f *Fleet) Run(ctx context.Context) {
	var wg sync.WaitGroup
	start := time.Now()
	for _, m := range f.machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ctxtime.Sleep(ctx, time.Until(start.Add(f.cfg.PowerOn(m.Index)))) != nil {
				return
			}
			m.run(ctx)
		}()
	}
	wg.Wait()
}

// Expected is the fleet as an operator imports it before power-on: every machine by
// its MACs, with its rack as an operator label (what an agent says of itself is only a
// fact, and placement reads the operator's labels).
func (f *Fleet) Expected() *shared.ImportRequest {
	req := &shared.ImportRequest{}
	for _, m := range f.machines {
		req.Machines = append(req.Machines, coordinatortest.Expected(f.cfg.FirstIndex+m.Index,
			map[string]string{"rack": rackName(m.Index, f.cfg.Racks)}))
	}
	return req
}

// Ready counts the machines the coordinators have told they are ready.
func (f *Fleet) Ready() int { return f.stats.Count(MilestoneReady) }

// Role is the role a simulated fleet is planned with: every machine, its smallest disk,
// an image, and Swarm managers placed over the racks.
func Role() shared.Role {
	return shared.Role{Name: "sim", Description: "simulated fleet (rivet-bench fleet)",
		InstallDisk: shared.DiskRule{Smallest: &shared.SmallestDisk{MinSizeGB: 100}},
		Image: shared.ImageSpec{URL: "/v1/images/sim.raw.zst", Compression: shared.CompressionZstd,
			SHA256: "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"},
		Swarm: shared.SwarmSpec{Role: shared.SwarmAuto}}
}
