package state

import (
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

// readySwarm is the fixture with the swarm created, mgr2 and the worker joined, and
// every one of them ready (their swarm step succeeded).
func readySwarm(t *testing.T) *swarmFixture {
	f := newSwarmFixture(t)
	f.createSwarm()
	f.mustJoin(mgr2)
	f.mustReport(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", Addr: "10.0.0.2:2377"})
	f.mustJoin(worker)
	f.mustReport(worker, shared.SwarmReport{NodeID: "n9", ClusterID: "c1"})
	for _, id := range []shared.MachineID{mgr1, mgr2, worker} {
		res := out(f.s.ApplyReport(Report{ID: id, Time: f.now, Report: shared.StepReport{Generation: 2, Step: "swarm",
			Status: shared.StepSucceeded, Attempt: 1}}, f.next()))
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		if m, _ := f.s.Machine(id); m.State != shared.StateReady {
			t.Fatalf("%s is %s, want ready", id, m.State)
		}
	}
	return f
}

func (f *swarmFixture) startOp(target, runner shared.MachineID, node string, replaces uint64) outcome {
	op := shared.SwarmOp{Kind: shared.SwarmOpRemove, Target: target, NodeID: node, Runner: runner, Reason: "retired"}
	return out(f.s.ApplySwarmOpStart(SwarmOpStart{Op: op, Time: f.now, Replaces: replaces}, f.next()))
}

func TestSwarmOpStartRules(t *testing.T) {
	f := readySwarm(t)
	for _, tc := range []struct {
		what           string
		target, runner shared.MachineID
		node           string
	}{
		{"a stale node id", worker, mgr1, "n-old"},
		{"a runner that is a worker", mgr2, worker, "n2"},
		{"a runner that is not ready", worker, mgr3, "n9"},
		{"a node removing itself", mgr1, mgr1, "n1"},
		{"an unknown target", "m-00000000000000ff", mgr1, "n9"},
	} {
		f.refused(tc.what, KindConflict, func() outcome { return f.startOp(tc.target, tc.runner, tc.node, 0) })
	}
	first := f.startOp(worker, mgr1, "n9", 0)
	if first.Err != nil {
		t.Fatal(first.Err)
	}
	f.refused("a second operation on the same target", KindConflict, func() outcome {
		return f.startOp(worker, mgr2, "n9", 0)
	})
	ops := f.s.SwarmOps()
	if len(ops) != 1 || len(f.s.SwarmOpsFor(mgr1)) != 1 || len(f.s.SwarmOpsFor(mgr2)) != 0 {
		t.Fatalf("pending ops %+v", ops)
	}
	// The leader may hand a stalled operation to another manager, naming it.
	if res := f.startOp(worker, mgr2, "n9", ops[0].ID); res.Err != nil {
		t.Fatal(res.Err)
	}
	if len(f.s.SwarmOpsFor(mgr1)) != 0 || len(f.s.SwarmOpsFor(mgr2)) != 1 {
		t.Fatalf("after the hand-over: %+v", f.s.SwarmOps())
	}
}

func TestSwarmOpDoneRemovesTheNodeAndRotatesTokens(t *testing.T) {
	f := readySwarm(t)
	if res := f.startOp(mgr2, mgr1, "n2", 0); res.Err != nil {
		t.Fatal(res.Err)
	}
	id := f.s.SwarmOps()[0].ID
	done := func(runner shared.MachineID, r shared.SwarmOpReport) outcome {
		return out(f.s.ApplySwarmOpDone(SwarmOpDone{ID: id, Runner: runner, Time: f.now, Report: r}, f.next()))
	}
	ok := shared.SwarmOpReport{OK: true, Detail: "demoted, removed", ManagerToken: "SWMTKN-1-mgr-new", WorkerToken: "SWMTKN-1-wrk-new"}
	f.refused("a report from another machine", KindForbidden, func() outcome { return done(worker, ok) })
	if res := done(mgr1, ok); res.Err != nil {
		t.Fatal(res.Err)
	}
	sw := f.s.Swarm()
	if sw.ManagerToken != "SWMTKN-1-mgr-new" || sw.WorkerToken != "SWMTKN-1-wrk-new" || len(sw.Ops) != 0 {
		t.Fatalf("after the report: tokens %q %q, ops %v", sw.ManagerToken, sw.WorkerToken, sw.Ops)
	}
	if _, listed := sw.Managers[mgr2]; listed || len(sw.ManagerAddrs) != 1 {
		t.Fatalf("the removed manager is still listed: %v %v", sw.Managers, sw.ManagerAddrs)
	}
	if m, _ := f.s.Machine(mgr2); m.SwarmNodeID != "" {
		t.Fatalf("the removed machine keeps swarm node %q", m.SwarmNodeID)
	}
	f.refused("a second report of the same operation", KindNotFound, func() outcome { return done(mgr1, ok) })
}

func TestFailedSwarmOpChangesOnlyTheTimeline(t *testing.T) {
	f := readySwarm(t)
	if res := f.startOp(worker, mgr1, "n9", 0); res.Err != nil {
		t.Fatal(res.Err)
	}
	before := f.s.Swarm()
	id := f.s.SwarmOps()[0].ID
	res := out(f.s.ApplySwarmOpDone(SwarmOpDone{ID: id, Runner: mgr1, Time: f.now,
		Report: shared.SwarmOpReport{Error: "dockerd: node is not down"}}, f.next()))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	after := f.s.Swarm()
	if len(after.Ops) != 0 || after.WorkerToken != before.WorkerToken || len(after.Managers) != len(before.Managers) {
		t.Fatalf("a failed operation changed the swarm: %+v", after)
	}
	if m, _ := f.s.Machine(worker); m.SwarmNodeID != "n9" {
		t.Fatalf("a failed removal cleared the node id")
	}
}

func TestLostManagerIsReplacedOnceThenRemoved(t *testing.T) {
	f := readySwarm(t)
	promote := func(target shared.MachineID, node string, lost shared.MachineID) outcome {
		op := shared.SwarmOp{Kind: shared.SwarmOpPromote, Target: target, NodeID: node, For: lost, Runner: mgr1, Reason: "test"}
		return out(f.s.ApplySwarmOpStart(SwarmOpStart{Op: op, Time: f.now}, f.next()))
	}
	f.refused("promoting in place of a manager that is not lost", KindConflict, func() outcome { return promote(worker, "n9", mgr2) })
	if res := out(f.s.ApplyGossip(Gossip{ID: mgr2, Reason: "test: failed", Time: f.now}, f.next())); res.Err != nil {
		t.Fatal(res.Err)
	}
	if lost := f.s.LostManagers(); len(lost) != 1 || lost[0].ID != mgr2 || lost[0].By != "" {
		t.Fatalf("lost managers %+v, want mgr2 not replaced", lost)
	}
	f.refused("promoting a manager (the only ready one, so also the runner)", KindConflict, func() outcome { return promote(mgr1, "n1", mgr2) })
	if res := promote(worker, "n9", mgr2); res.Err != nil {
		t.Fatal(res.Err)
	}
	id := f.s.SwarmOps()[0].ID
	done := func(r shared.SwarmOpReport) outcome {
		return out(f.s.ApplySwarmOpDone(SwarmOpDone{ID: id, Runner: mgr1, Time: f.now, Report: r}, f.next()))
	}
	f.refused("a promotion's report without an address", KindInvalid, func() outcome { return done(shared.SwarmOpReport{OK: true}) })
	if res := done(shared.SwarmOpReport{OK: true, ManagerAddr: "10.0.0.9:2377"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	sw := f.s.Swarm()
	if sw.Managers[worker] != "10.0.0.9:2377" || sw.Replaced[mgr2] != worker {
		t.Fatalf("after the promotion: managers %v, replaced %v", sw.Managers, sw.Replaced)
	}
	if m, _ := f.s.Machine(worker); !plannedManager(m) {
		t.Fatal("the promoted machine's plan still says worker")
	}
	if lost := f.s.LostManagers(); len(lost) != 1 || lost[0].By != worker {
		t.Fatalf("lost managers %+v, want mgr2 replaced by the worker", lost)
	}
	f.refused("a second replacement", KindConflict, func() outcome { return promote(worker, "n9", mgr2) })
	// Now the lost one goes: removed, it is neither a manager nor replaced any more.
	if res := f.startOp(mgr2, mgr1, "n2", 0); res.Err != nil {
		t.Fatal(res.Err)
	}
	id = f.s.SwarmOps()[0].ID
	if res := done(shared.SwarmOpReport{OK: true, ManagerToken: "SWMTKN-1-m2", WorkerToken: "SWMTKN-1-w2"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	sw = f.s.Swarm()
	if _, ok := sw.Managers[mgr2]; ok || len(sw.Replaced) != 0 || len(f.s.LostManagers()) != 0 {
		t.Fatalf("after removing the lost manager: managers %v, replaced %v", sw.Managers, sw.Replaced)
	}
}
