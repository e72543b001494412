package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/bench/fleetsim"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// FleetOptions configures `rivet-bench fleet`.
type FleetOptions struct {
	RivetBin     string
	Coordinators int
	Machines     int
	// SerfMembers is how many of the machines join the Serf pool (the first ones); the
	// rest work by polling alone, as an agent whose gossip port is blocked does.
	SerfMembers int
	Ramp        time.Duration // machines power on evenly over this long
	Poll        time.Duration // the agents' poll interval (the agent's default: 15s)
	StepScale   float64       // multiplies the simulated step durations (1: realistic)
	// Faults.
	KillLeader    bool          // SIGKILL the leader while machines write their images
	Partition     bool          // cut one follower off the bridge, then heal it (needs Netns)
	PartitionHold time.Duration // how long the partition lasts; default 20s
	RestartAll    bool          // SIGKILL every coordinator once a quarter of the fleet is ready, restart them
	Burst         int           // this many machines power on in the same instant, before the ramp
	// Netns runs the coordinators in network namespaces (root); Subnet is their /24.
	Netns  bool
	Subnet string
	// PprofDir, when set, makes the coordinators serve pprof and saves each one's CPU
	// profile during the busiest phase, and heap profiles at the end.
	PprofDir string
	// MemoryLimit is the coordinators' --memory-limit ("" leaves their default, auto).
	MemoryLimit string
	Dir         string        // scratch directory (removed after, unless Keep)
	Keep        bool          // keep the data dirs and logs
	Timeout     time.Duration // for the whole fleet to be ready; default 20m
	// Cluster is a cluster already started (the integration test owns its cleanup); nil
	// starts one.
	Cluster *coordinatortest.Cluster
}

func (o *FleetOptions) defaults() {
	orDefault(&o.Coordinators, 3)
	orDefault(&o.Machines, 200)
	if o.SerfMembers < 0 || o.SerfMembers > o.Machines {
		o.SerfMembers = o.Machines
	}
	orDefault(&o.Ramp, 30*time.Second)
	orDefault(&o.Poll, 15*time.Second)
	orDefault(&o.StepScale, 1)
	orDefault(&o.PartitionHold, 20*time.Second)
	if o.Burst > o.Machines {
		o.Burst = o.Machines
	}
	orDefault(&o.Timeout, 20*time.Minute)
	if o.Partition {
		o.Netns = true
	}
}

// FleetResult is what a fleet run measured and checked.
type FleetResult struct {
	Machines, Ready   int
	ToReady           time.Duration // first power-on to the last machine ready
	API               fleetsim.Summary
	WritesPerSec      float64 // writes the API acknowledged, per second until all ready
	RaftEntriesPerSec float64 // log entries the leader applied per second (batches count once)
	RaftLogBytes      int64   // raft.db of the leader
	SnapshotBytes     int64   // the leader's newest state.bin
	SnapshotTime      time.Duration
	RestoreTime       time.Duration // decoding the snapshot into a store, in process
	CatchUpTime       time.Duration // a follower restarted until its digest matches
	CoordCPU          []float64     // CPU seconds per coordinator
	PeakRSS           []int64       // bytes per coordinator, whole run
	PeakRSSRun        []int64       // bytes per coordinator until every machine was ready
	SimCPU            float64       // CPU seconds of this process (the simulated fleet)
	SerfMembers       int
	SerfJoin          time.Duration // last first-join until every coordinator sees all members alive
	SerfTags          time.Duration // last machine ready until every coordinator sees every ready tag
	LoadBefore        string
	LoadAfter         string
	Check             FleetCheck
	Faults            []FaultReport
}

// FleetCheck is what every coordinator records at the end of a run, for a test to judge
// (integration/fleet_test.go): the bench reports it and passes no verdict.
type FleetCheck struct {
	Listed       []int // machines each coordinator lists (probes excluded)
	Duplicates   int   // ids or hostnames listed more than once
	NotReady     []string
	LostAcks     []string // acknowledged step results missing from the record
	DigestsEqual bool
	Digest       shared.Digest
}

// probeIndex numbers the hardware of write probes, far from any fleet's machines.
const probeIndex = 9_000_000

// Fleet runs the fleet bench and prints its figures: real coordinator processes (on
// loopback, or in network namespaces for the partition), and opts.Machines simulated
// machines in this process (package fleetsim) that register, run their plans with the
// agent's step runner, reboot and join the swarm through the real API, each over its own
// HTTPS connection, the first opts.SerfMembers also in the real Serf pool. Machines get
// the coordinators' URLs in the same order, as rivet.url gives them, so they all talk to
// the first coordinator until it fails. The figures are taken from the outside: API
// latency as the machines saw it, CPU and peak RSS from /proc, storage from the data
// dirs, and the state is checked on every coordinator at the end.
func Fleet(ctx context.Context, w io.Writer, opts FleetOptions) (*FleetResult, error) {
	opts.defaults()
	res := &FleetResult{Machines: opts.Machines, SerfMembers: opts.SerfMembers, LoadBefore: loadAvg()}
	cluster := opts.Cluster
	if cluster != nil {
		opts.Netns = cluster.Bridged()
	} else {
		dir, err := os.MkdirTemp(opts.Dir, "rivet-bench-fleet-")
		if err != nil {
			return nil, err
		}
		if !opts.Keep {
			defer os.RemoveAll(dir)
		} else {
			fmt.Fprintf(w, "fleet: data dirs and logs kept in %s\n", dir)
		}
		// The simulated fleet shares one enrolment token; a real fleet network-boots with a
		// ticket each (limited per source address).
		extra := []string{"--log-level", "warn", "--register-rate", "0"}
		if opts.PprofDir != "" {
			extra = append(extra, "--debug-pprof")
		}
		if opts.MemoryLimit != "" {
			extra = append(extra, "--memory-limit", opts.MemoryLimit)
		}
		copts := coordinatortest.Options{Bin: opts.RivetBin, Dir: dir, Nodes: opts.Coordinators, ExtraArgs: extra,
			NormalElections: !opts.KillLeader && !opts.Partition && !opts.RestartAll}
		if opts.Netns {
			copts.Bridge = &coordinatortest.Bridge{Subnet: cmp.Or(opts.Subnet, "10.232.101")}
		}
		cluster, err = coordinatortest.Start(ctx, copts)
		if err != nil {
			return nil, fmt.Errorf("starting coordinators: %w", err)
		}
		defer cluster.Stop()
	}
	admin := cluster.Client()
	if _, err := admin.ApplyRoles(ctx, &shared.RoleList{Roles: []shared.Role{fleetsim.Role()}}, false); err != nil {
		return nil, fmt.Errorf("applying the fleet's role: %w", err)
	}
	fmt.Fprintf(w, "bench fleet: %d coordinators (%s), %d machines (%d in Serf), power-on over %s (burst %d), "+
		"poll %s, step durations x%.2g, coordinator memory limit %s; load %s\n", len(cluster.Nodes), map[bool]string{true: "netns", false: "loopback"}[opts.Netns],
		opts.Machines, opts.SerfMembers, opts.Ramp, opts.Burst, opts.Poll, opts.StepScale, cmp.Or(opts.MemoryLimit, "auto"), res.LoadBefore)

	// The simulated fleet is the measuring instrument, not the subject: a lazier GC keeps
	// its CPU (mostly GC of thousands of Serf and TLS buffers) for the machines' work.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	meter := newProcMeter(cluster.Nodes)
	stopMeter := make(chan struct{})
	go meter.run(500*time.Millisecond, stopMeter)
	defer close(stopMeter)
	if opts.PprofDir != "" {
		// The simulated fleet's own profile: what the machines and their Serf members cost.
		if stopProfile, err := profileSelf(filepath.Join(opts.PprofDir, "cpu-sim.pprof")); err == nil {
			defer stopProfile()
		}
	}
	startIndex := appliedIndex(ctx, cluster)
	cpuStart := selfCPUSeconds()

	journals, err := os.MkdirTemp(shmDir(), "rivet-bench-fleet-journals-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(journals)
	fcfg := fleetConfig(cluster, opts)
	fcfg.JournalDir = journals
	fleet, err := fleetsim.New(fcfg)
	if err != nil {
		return nil, err
	}
	if err := importFleet(ctx, cluster, fleet); err != nil {
		return nil, err
	}
	runCtx, stopFleet := context.WithCancel(ctx)
	fleetDone := make(chan struct{})
	go func() { fleet.Run(runCtx); close(fleetDone) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopFleet()
			<-fleetDone
		}
	}
	defer stop()

	h := &fleetRun{w: w, opts: opts, cluster: cluster, fleet: fleet, res: res}
	faultsDone := make(chan struct{})
	go func() { defer close(faultsDone); h.faults(runCtx) }()
	profDone := make(chan struct{})
	go func() {
		defer close(profDone)
		if opts.PprofDir != "" {
			h.profile(runCtx)
		}
	}()
	waitErr := h.waitReady(ctx)
	// Peak memory of the provisioning itself, before the end's snapshots, digests and
	// the follower restart add their own (the second figure).
	_, res.PeakRSSRun = meter.totals()
	<-faultsDone
	h.bg.Wait()
	start := fleet.Stats().Start()
	res.Ready = fleet.Ready()
	if last := fleet.Stats().Last(fleetsim.MilestoneReady); !last.IsZero() {
		res.ToReady = last.Sub(start)
	}
	res.API = fleet.Stats().Summary()
	if secs := res.ToReady.Seconds(); secs > 0 {
		res.WritesPerSec = float64(res.API.Acked) / secs
		res.RaftEntriesPerSec = float64(appliedIndex(ctx, cluster)-startIndex) / secs
	}
	if waitErr == nil {
		h.serfFinal(ctx)
	}
	// Checked while the machines still run: stopped machines leave the pool, and a
	// machine whose member fails is rightly marked lost.
	res.Check = h.check(ctx)
	if opts.PprofDir != "" {
		if f, err := os.Create(filepath.Join(opts.PprofDir, "heap-sim.pprof")); err == nil {
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
	stop()
	<-profDone
	res.SimCPU = selfCPUSeconds() - cpuStart
	h.storage(ctx)
	res.CoordCPU, res.PeakRSS = meter.totals()
	if opts.PprofDir != "" {
		h.heapProfiles(ctx)
	}
	res.LoadAfter = loadAvg()
	printFleet(w, res)
	return res, waitErr
}

// fleetConfig lays the machines out: on loopback each has its own 127.x address and,
// when it gossips, port 7946 there, as on a real LAN; in netns mode they share the
// host's address with a port each (20000+i, so at most 10,000 gossip there).
func fleetConfig(c *coordinatortest.Cluster, o FleetOptions) fleetsim.Config {
	n, burst := o.Machines, o.Burst
	return fleetsim.Config{URLs: c.URLs(), CAFingerprint: c.Fingerprint, EnrolToken: c.EnrolToken,
		Machines: n, Racks: 8, PollInterval: o.Poll, Durations: fleetsim.DefaultDurations().Scaled(o.StepScale),
		BurstRoute: burst,
		Addr: func(i int) (string, string) {
			ip := fmt.Sprintf("127.%d.%d.%d", 1+i>>16, i>>8&255, i&255)
			if o.Netns {
				ip = c.HostIP()
			}
			if i >= o.SerfMembers {
				return ip, ""
			}
			if o.Netns {
				// One address for all: a port each, kept across reboots as a real
				// machine keeps its address (below the ephemeral range).
				return ip, fmt.Sprintf("%s:%d", ip, 20000+i)
			}
			return ip, ip + ":7946"
		},
		PowerOn: func(i int) time.Duration {
			if i < burst {
				return 0
			}
			rest := max(n-burst, 1)
			head := time.Duration(0)
			if burst > 0 {
				head = time.Second // the burst has its second to itself
			}
			return head + time.Duration(float64(o.Ramp)*float64(i-burst)/float64(rest))
		}}
}

// fleetRun is one run's harness state.
type fleetRun struct {
	wmu     sync.Mutex
	bg      sync.WaitGroup // measurements running beside the run
	w       io.Writer
	opts    FleetOptions
	cluster *coordinatortest.Cluster
	fleet   *fleetsim.Fleet
	res     *FleetResult
}

func (h *fleetRun) logf(format string, args ...any) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	fmt.Fprintf(h.w, "  %6.1fs "+format+"\n", append([]any{time.Since(h.fleet.Stats().Start()).Seconds()}, args...)...)
}

// waitReady prints progress every 10 s until every machine is ready or the timeout.
func (h *fleetRun) waitReady(ctx context.Context) error {
	st := h.fleet.Stats()
	deadline := time.Now().Add(h.opts.Timeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastPrint := time.Now()
	serfJoined := false
	for h.fleet.Ready() < h.opts.Machines {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if !serfJoined && h.opts.SerfMembers > 0 && st.Count(fleetsim.MilestoneGossip) >= h.opts.SerfMembers {
			serfJoined = true
			h.bg.Add(1)
			go func() { defer h.bg.Done(); h.serfJoin(ctx) }()
		}
		if time.Since(lastPrint) >= 10*time.Second {
			lastPrint = time.Now()
			h.logf("registered %d, imaging %d, rebooted %d, ready %d; writes acked %d; load %s",
				st.Count(fleetsim.MilestoneRegistered), st.Count(fleetsim.MilestoneImaging),
				st.Count(fleetsim.MilestoneRebooted), h.fleet.Ready(), st.Acked(), loadAvg())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d machines ready after %s", h.fleet.Ready(), h.opts.Machines, h.opts.Timeout)
		}
	}
	return nil
}

// serfJoin measures how long after the last member joined every coordinator sees all
// of them alive.
func (h *fleetRun) serfJoin(ctx context.Context) {
	last := h.fleet.LastGossipJoin()
	// Only meaningful before the first machine reboots (and leaves the pool on purpose).
	stop := func() bool { return h.fleet.Stats().Count(fleetsim.MilestoneRebooted) > 0 }
	if h.waitSerf(ctx, time.Minute, stop, func(t shared.Tags) bool { return true }) {
		h.res.SerfJoin = time.Since(last)
	}
}

// serfFinal measures how long after the last machine was ready every coordinator sees
// every gossiping machine alive with the ready tag.
func (h *fleetRun) serfFinal(ctx context.Context) {
	if h.opts.SerfMembers == 0 {
		return
	}
	last := h.fleet.Stats().Last(fleetsim.MilestoneReady)
	never := func() bool { return false }
	if h.waitSerf(ctx, 30*time.Second, never, func(t shared.Tags) bool { return t.State == shared.StateReady }) {
		h.res.SerfTags = time.Since(last)
	}
}

var errGaveUp = errors.New("gave up: machines started rebooting before the pool converged")

func (h *fleetRun) waitSerf(ctx context.Context, timeout time.Duration, stop func() bool, want func(shared.Tags) bool) bool {
	err := testenv.Poll(ctx, timeout, "every coordinator to see the Serf members", func() error {
		if stop() {
			return nil
		}
		for _, n := range h.cluster.Nodes {
			if !n.Running() {
				continue
			}
			m, err := h.cluster.Client(n).Members(ctx)
			if err != nil {
				return err
			}
			alive := 0
			seen := map[string]int{} // status/state → agents, for the error
			for _, s := range m.Serf {
				if s.Tags.Kind != shared.KindAgent {
					continue
				}
				seen[s.Status+"/"+string(s.Tags.State)]++
				if s.Status == "alive" && want(s.Tags) {
					alive++
				}
			}
			if alive < h.opts.SerfMembers {
				return fmt.Errorf("%s sees %d of %d (by status/state: %v)", n.ID, alive, h.opts.SerfMembers, seen)
			}
		}
		return nil
	})
	if err == nil && stop() {
		err = errGaveUp
	}
	if err != nil {
		h.logf("serf: %v", err)
	}
	return err == nil
}

func appliedIndex(ctx context.Context, c *coordinatortest.Cluster) uint64 {
	var best uint64
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		if h, err := c.Client(n).Health(ctx); err == nil && h.AppliedIndex > best {
			best = h.AppliedIndex
		}
	}
	return best
}

// newest returns the newest file matching pattern and its size.
func newest(pattern string) (string, int64) {
	paths, _ := filepath.Glob(pattern)
	var best string
	var bestInfo os.FileInfo
	for _, p := range paths {
		info, err := os.Stat(p)
		if err == nil && (bestInfo == nil || info.ModTime().After(bestInfo.ModTime())) {
			best, bestInfo = p, info
		}
	}
	if bestInfo == nil {
		return "", 0
	}
	return best, bestInfo.Size()
}

// profileSelf writes this process's CPU profile to path until the returned func is called.
func profileSelf(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// shmDir is a tmpfs for the machines' step journals (the RAM agent keeps its journal on
// tmpfs too), or the default temp dir.
func shmDir() string {
	if info, err := os.Stat("/dev/shm"); err == nil && info.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// importFleet imports the fleet as expected machines, as an operator does before power-on:
// the machines are admitted by the list and take its racks. Up to 20,000 rows a write.
func importFleet(ctx context.Context, cluster *coordinatortest.Cluster, fleet *fleetsim.Fleet) error {
	all := fleet.Expected().Machines
	for len(all) > 0 {
		n := min(len(all), shared.MaxExpectedPerImport)
		if _, err := cluster.Client().ImportExpected(ctx, &shared.ImportRequest{Machines: all[:n]}); err != nil {
			return fmt.Errorf("importing the fleet as expected machines: %w", err)
		}
		all = all[n:]
	}
	return nil
}
