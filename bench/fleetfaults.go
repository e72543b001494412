package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/rivetmetal/rivet/bench/fleetsim"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// FaultReport is what one injected fault did, for a test to judge.
type FaultReport struct {
	Name   string
	At     time.Duration // since the first power-on
	Detail string
	// Recovered: the fault was carried out, and every coordinator it killed or cut off
	// answered healthy with a leader afterwards.
	Recovered bool
	// Partition only: whether the cut-off coordinator noticed it had no leader, the write
	// sent to it and its answer, and whether the majority accepted a write meanwhile.
	MinorityLostLeader bool
	MinorityRefused    bool
	MinorityError      string
	MinorityTook       time.Duration
	MajorityAccepted   bool
}

// faults injects the requested faults one after the other, each at a moment of the run
// where it hurts: the leader dies while machines stream images, a follower is cut off
// while machines reboot, everything restarts once a quarter of the fleet is ready.
func (h *fleetRun) faults(ctx context.Context) {
	n := h.opts.Machines
	if h.opts.KillLeader && h.waitFor(ctx, fleetsim.MilestoneImaging, max(n/4, 1)) {
		h.addFault(h.killLeader(ctx))
	}
	if h.opts.Partition && h.waitFor(ctx, fleetsim.MilestoneRebooted, max(n/4, 1)) {
		h.addFault(h.partition(ctx))
	}
	if h.opts.RestartAll && h.waitFor(ctx, fleetsim.MilestoneReady, max(n/4, 1)) {
		h.addFault(h.restartAll(ctx))
	}
}

func (h *fleetRun) addFault(f FaultReport) {
	h.res.Faults = append(h.res.Faults, f)
	h.logf("fault %s: %s", f.Name, f.Detail)
}

func (h *fleetRun) since() time.Duration { return time.Since(h.fleet.Stats().Start()) }

// waitFor waits until count machines reached milestone; false if the run ended first.
func (h *fleetRun) waitFor(ctx context.Context, milestone string, count int) bool {
	reached := func() bool { return h.fleet.Stats().Count(milestone) >= count }
	return testenv.Poll(ctx, h.opts.Timeout, fmt.Sprintf("%d machines %s", count, milestone), testenv.Holds(reached, nil)) == nil
}

func (h *fleetRun) killLeader(ctx context.Context) FaultReport {
	f := FaultReport{Name: "leader-kill", At: h.since()}
	old, err := h.cluster.Leader(ctx)
	if err != nil {
		f.Detail = err.Error()
		return f
	}
	start := time.Now()
	h.cluster.Kill(old)
	next, err := h.cluster.Leader(ctx)
	if err != nil {
		f.Detail = fmt.Sprintf("SIGKILL %s: no new leader: %v", old.ID, err)
		return f
	}
	elected := time.Since(start)
	// A real operator's restart comes later than the election; the old leader rejoins
	// as a follower and catches up.
	time.Sleep(5 * time.Second)
	restart := time.Now()
	if err := h.cluster.Restart(ctx, old); err != nil {
		f.Detail = err.Error()
		return f
	}
	if err := h.cluster.WaitHealthy(ctx, old); err != nil {
		f.Detail = fmt.Sprintf("%s did not come back: %v", old.ID, err)
		return f
	}
	f.Recovered = true
	f.Detail = fmt.Sprintf("SIGKILL leader %s; %s leads after %.2fs; %s restarted 5 s later, healthy after %.2fs",
		old.ID, next.ID, elected.Seconds(), old.ID, time.Since(restart).Seconds())
	return f
}

// partition cuts one follower off the bridge, checks that it refuses a write while the
// majority accepts one, then heals it.
func (h *fleetRun) partition(ctx context.Context) FaultReport {
	f := FaultReport{Name: "partition", At: h.since()}
	leader, err := h.cluster.Leader(ctx)
	if err != nil {
		f.Detail = err.Error()
		return f
	}
	var cut *coordinatortest.Node
	for i := len(h.cluster.Nodes) - 1; i >= 0 && cut == nil; i-- {
		if n := h.cluster.Nodes[i]; n != leader {
			cut = n
		}
	}
	start := time.Now()
	if err := h.cluster.Cut(cut); err != nil {
		f.Detail = err.Error()
		return f
	}
	healed := false
	heal := func() {
		if !healed {
			healed = true
			_ = h.cluster.Heal(cut)
		}
	}
	defer heal()
	// The cut-off node notices within its election timeout that it has no leader.
	minority := h.cluster.Client(cut)
	noLeader := testenv.Poll(ctx, 30*time.Second, cut.ID+" to lose its leader", func() error {
		hl, err := minority.Health(ctx)
		if err == nil && hl.Status == "ok" {
			return fmt.Errorf("%s still reports a leader", cut.ID)
		}
		return nil
	})
	lostLeader := time.Since(start)
	probe := coordinatortest.RegisterRequest(probeIndex)
	pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	t := time.Now()
	_, werr := minority.WithToken(h.cluster.EnrolToken).Register(pctx, probe)
	cancel()
	f.MinorityTook = time.Since(t)
	f.MinorityRefused = werr != nil && shared.StatusOf(werr) == 503
	if werr != nil {
		f.MinorityError = werr.Error()
	}
	majority := h.cluster.Client(leader)
	_, merr := majority.CreateToken(ctx, &shared.TokenRequest{Name: fmt.Sprintf("partition-probe-%d", time.Now().UnixNano()%1e6), Role: shared.TokenViewer})
	if rest := h.opts.PartitionHold - time.Since(start); rest > 0 {
		time.Sleep(rest)
	}
	held := time.Since(start)
	heal()
	t = time.Now()
	herr := h.cluster.WaitHealthy(ctx, cut)
	back := time.Since(t)
	f.MinorityLostLeader, f.MajorityAccepted, f.Recovered = noLeader == nil, merr == nil, herr == nil
	f.Detail = fmt.Sprintf("cut %s off for %.1fs: it lost its leader after %.2fs; a registration sent to it got %q after %.2fs; "+
		"the majority (leader %s) accepted a write: %v; healed, %s healthy after %.2fs",
		cut.ID, held.Seconds(), lostLeader.Seconds(), f.MinorityError, f.MinorityTook.Seconds(), leader.ID, merr == nil, cut.ID, back.Seconds())
	if noLeader != nil {
		f.Detail += fmt.Sprintf(" (it kept a leader: %v)", noLeader)
	}
	if herr != nil {
		f.Detail += fmt.Sprintf(" (not healthy: %v)", herr)
	}
	return f
}

func (h *fleetRun) restartAll(ctx context.Context) FaultReport {
	f := FaultReport{Name: "restart-all", At: h.since()}
	start := time.Now()
	for _, n := range h.cluster.Nodes {
		h.cluster.Kill(n)
	}
	time.Sleep(2 * time.Second)
	for _, n := range h.cluster.Nodes {
		if err := h.cluster.Restart(ctx, n); err != nil {
			f.Detail = err.Error()
			return f
		}
	}
	for _, n := range h.cluster.Nodes {
		if err := h.cluster.WaitHealthy(ctx, n); err != nil {
			f.Detail = fmt.Sprintf("%s did not come back: %v", n.ID, err)
			return f
		}
	}
	f.Recovered = true
	f.Detail = fmt.Sprintf("SIGKILL all %d coordinators, restarted 2 s later; all healthy with a leader %.2fs after the kill",
		len(h.cluster.Nodes), time.Since(start).Seconds())
	return f
}

// probeID is the machine id of the partition's write probe, left out of the checks (a
// refused write may still be applied later; the client was told it failed).
func probeID() shared.MachineID {
	inv := coordinatortest.FakeInventory(probeIndex)
	id, _ := shared.DeriveMachineID(&inv)
	return id.ID
}
