package state

import (
	"slices"
	"strings"
	"testing"
	"time"

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

// retire takes a machine out of service: a machine the swarm may remove.
func (f *swarmFixture) retire(id shared.MachineID) {
	f.t.Helper()
	if res := out(f.s.ApplyAction(Action{ID: id, Action: shared.ActionRetire, Time: f.now}, f.next())); res.Err != nil {
		f.t.Fatal(res.Err)
	}
}

func TestSwarmOpStartRules(t *testing.T) {
	f := readySwarm(t)
	f.refused("removing a ready machine that is not leaving", KindConflict, func() outcome { return f.startOp(worker, mgr1, "n9", 0) })
	f.retire(worker)
	for _, tc := range []struct {
		what           string
		target, runner shared.MachineID
		node, want     string
	}{
		{"a stale node id", worker, mgr1, "n-old", "its swarm node is"},
		{"a runner that is not ready", worker, mgr3, "n9", "is not a ready manager"},
		{"a node removing itself", mgr1, mgr1, "n1", "on itself"},
		{"an unknown target", "m-00000000000000ff", mgr1, "n9", "no such machine"},
	} {
		err := f.refused(tc.what, KindConflict, func() outcome { return f.startOp(tc.target, tc.runner, tc.node, 0) })
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: refused with %q, want it to say %q", tc.what, err, tc.want)
		}
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
	f.retire(mgr2)
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
	f.retire(worker)
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

// TestReprovisionWalksItsPhases takes a ready manager through a re-provisioning: drain,
// a worker promoted in its place, removal, a new plan (which leaves the old node), and
// ready again; each phase refuses the operations of the others.
func TestReprovisionWalksItsPhases(t *testing.T) {
	f := readySwarm(t)
	reprovision := func(id shared.MachineID) outcome {
		return out(f.s.ApplyReprovision(Reprovision{ID: id, Reason: "new image", By: "ops", Time: f.now}, f.next()))
	}
	op := func(kind shared.SwarmOpKind, target shared.MachineID, node string, forID shared.MachineID) outcome {
		return out(f.s.ApplySwarmOpStart(SwarmOpStart{Time: f.now, Op: shared.SwarmOp{Kind: kind, Target: target,
			NodeID: node, Runner: mgr1, For: forID}}, f.next()))
	}
	done := func(r shared.SwarmOpReport) outcome {
		t.Helper()
		ops := f.s.SwarmOps()
		if len(ops) != 1 {
			t.Fatalf("pending ops %+v, want one", ops)
		}
		return out(f.s.ApplySwarmOpDone(SwarmOpDone{ID: ops[0].ID, Runner: mgr1, Time: f.now, Report: r}, f.next()))
	}
	phase := func(want shared.ReprovisionPhase) {
		t.Helper()
		m, _ := f.s.Machine(mgr2)
		if m.Reprovision == nil || m.Reprovision.Phase != want {
			t.Fatalf("re-provisioning %+v, want phase %s", m.Reprovision, want)
		}
	}
	f.refused("a machine that is not ready", KindConflict, func() outcome { return reprovision(mgr3) })
	f.refused("draining a machine not being re-provisioned", KindConflict, func() outcome { return op(shared.SwarmOpDrain, mgr2, "n2", "") })
	if res := reprovision(mgr2); res.Err != nil {
		t.Fatal(res.Err)
	}
	phase(shared.ReprovisionDrain)
	f.refused("a second re-provisioning", KindConflict, func() outcome { return reprovision(mgr2) })
	f.refused("removing it before it is drained", KindConflict, func() outcome { return op(shared.SwarmOpRemove, mgr2, "n2", "") })
	f.refused("promoting in its place before it is drained", KindConflict, func() outcome { return op(shared.SwarmOpPromote, worker, "n9", mgr2) })

	if res := op(shared.SwarmOpDrain, mgr2, "n2", ""); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := done(shared.SwarmOpReport{Error: "dockerd: timeout"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	phase(shared.ReprovisionDrain) // a failed drain leaves the phase: the keeper tries again
	if res := op(shared.SwarmOpDrain, mgr2, "n2", ""); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := done(shared.SwarmOpReport{OK: true, Detail: "no task runs on it"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	phase(shared.ReprovisionReplace) // a manager: a stand-in first
	f.refused("removing a manager before its stand-in is promoted", KindConflict, func() outcome { return op(shared.SwarmOpRemove, mgr2, "n2", "") })

	if res := op(shared.SwarmOpPromote, worker, "n9", mgr2); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := done(shared.SwarmOpReport{OK: true, ManagerAddr: "10.0.0.9:2377"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	phase(shared.ReprovisionLeave)
	if sw := f.s.Swarm(); sw.Managers[worker] == "" || len(f.s.ReadyManagers()) != 3 {
		t.Fatalf("after the promotion: managers %v, ready managers %v (want 3: the leaving one counts until removed)",
			sw.Managers, f.s.ReadyManagers())
	}

	if res := op(shared.SwarmOpRemove, mgr2, "n2", ""); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := done(shared.SwarmOpReport{OK: true, Detail: "demoted, removed", ManagerToken: "SWMTKN-1-m3", WorkerToken: "SWMTKN-1-w3"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	phase(shared.ReprovisionReinstall)
	m, _ := f.s.Machine(mgr2)
	if m.State != shared.StateDiscovered || m.Plan != nil || m.SwarmNodeID != "" || m.Reprovision.LeftNode != "n2" {
		t.Fatalf("after the removal: %s, plan %v, node %q, left %q", m.State, m.Plan, m.SwarmNodeID, m.Reprovision.LeftNode)
	}
	if rs := f.s.Reprovisionings(); len(rs) != 0 {
		t.Fatalf("a machine being reinstalled needs no swarm operation: %+v", rs)
	}
	if sw := f.s.Swarm(); sw.WorkerToken != "SWMTKN-1-w3" || sw.Managers[mgr2] != "" {
		t.Fatalf("after the removal: worker token rotated %v, still a manager %v", sw.WorkerToken == "SWMTKN-1-w3", sw.Managers[mgr2] != "")
	}

	// Planned again as a manager, it joins with the manager token, and once it is ready
	// its stand-in is demoted: the managers are the ones placed before.
	plan := &shared.Plan{MachineID: mgr2, Role: "swarm", Generation: 9, Steps: []shared.Step{{Name: "swarm",
		Kind: shared.StepSwarm, Phase: shared.PhaseDisk, Swarm: &shared.SwarmStep{Role: shared.SwarmManager, LeaveNode: "n2"}}}}
	if res := out(f.s.ApplySetPlan(SetPlan{ID: mgr2, Role: "swarm", Plan: plan, Time: f.now}, f.next())); res.Err != nil {
		t.Fatal(res.Err)
	}
	report := func(st shared.StepStatus) {
		t.Helper()
		if res := out(f.s.ApplyReport(Report{ID: mgr2, Time: f.now, Report: shared.StepReport{Generation: 9, Step: "swarm",
			Status: st, Attempt: 1}}, f.next())); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	report(shared.StepRunning)
	if j := f.mustJoin(mgr2); j.Token != "SWMTKN-1-m3" {
		t.Fatal("the re-provisioned manager did not get the rotated manager token")
	}
	f.mustReport(mgr2, shared.SwarmReport{NodeID: "n2-new", ClusterID: "c1", Addr: "10.0.0.2:2377"})
	report(shared.StepSucceeded)
	phase(shared.ReprovisionRestore)
	if rs := f.s.Reprovisionings(); len(rs) != 1 || rs[0].StandIn != worker {
		t.Fatalf("re-provisionings %+v, want the stand-in's demotion", rs)
	}
	f.refused("demoting a manager that stands in for nobody", KindConflict, func() outcome { return op(shared.SwarmOpDemote, mgr2, "n2-new", mgr2) })
	if res := op(shared.SwarmOpDemote, worker, "n9", mgr2); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := done(shared.SwarmOpReport{OK: true, Detail: "demoted"}); res.Err != nil {
		t.Fatal(res.Err)
	}
	m, _ = f.s.Machine(mgr2)
	if m.State != shared.StateReady || m.Reprovision != nil || m.SwarmNodeID != "n2-new" {
		t.Fatalf("after the new plan: %s, re-provisioning %+v, node %q", m.State, m.Reprovision, m.SwarmNodeID)
	}
	if w, _ := f.s.Machine(worker); plannedManager(w) || f.s.Swarm().Managers[worker] != "" {
		t.Fatal("the stand-in is still a manager after its demotion")
	}
	if got := f.s.ReadyManagers(); !slices.Equal(got, []shared.MachineID{mgr1, mgr2}) {
		t.Fatalf("ready managers %v, want mgr1 and mgr2 again", got)
	}
	evs := f.s.Events(mgr2)
	if last := evs[len(evs)-1].Message; !strings.HasPrefix(last, "re-provisioned in ") {
		t.Fatalf("the timeline ends with %q", last)
	}
}

// TestReimagedMachineBootsTheAgentOnce: a machine planned again with an image to write
// may have the kexec boot (only then), and one re-imaged through its BMC waits for one
// power cycle after its phase began, and no more.
func TestReimagedMachineBootsTheAgentOnce(t *testing.T) {
	f := readySwarm(t)
	f.refused("a kexec boot for a machine that is not re-imaged", KindConflict, func() outcome {
		_, err := f.s.KexecMAC(worker)
		return outcome{Err: err}
	})
	if res := out(f.s.ApplyReprovision(Reprovision{ID: worker, Time: f.now}, f.next())); res.Err != nil {
		t.Fatal(res.Err)
	}
	for _, kind := range []shared.SwarmOpKind{shared.SwarmOpDrain, shared.SwarmOpRemove} {
		op := shared.SwarmOp{Kind: kind, Target: worker, NodeID: "n9", Runner: mgr1}
		if res := out(f.s.ApplySwarmOpStart(SwarmOpStart{Op: op, Time: f.now}, f.next())); res.Err != nil {
			t.Fatal(res.Err)
		}
		id := f.s.SwarmOps()[0].ID
		if res := out(f.s.ApplySwarmOpDone(SwarmOpDone{ID: id, Runner: mgr1, Time: f.now, Report: shared.SwarmOpReport{OK: true}}, f.next())); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	plan := &shared.Plan{MachineID: worker, Role: "swarm", Generation: 9, Steps: []shared.Step{
		{Name: "reboot", Kind: shared.StepReboot, Phase: shared.PhaseRAM, Reboot: &shared.RebootStep{}},
		{Name: "swarm", Kind: shared.StepSwarm, Phase: shared.PhaseDisk, Swarm: &shared.SwarmStep{Role: shared.SwarmWorker}}}}
	if res := out(f.s.ApplySetPlan(SetPlan{ID: worker, Role: "swarm", Plan: plan, Time: f.now}, f.next())); res.Err != nil {
		t.Fatal(res.Err)
	}
	// The fixture's machines registered without NICs: past the state rule, the MAC is
	// what is missing.
	if _, err := f.s.KexecMAC(worker); err == nil || !strings.Contains(err.Error(), "no known MAC") {
		t.Fatalf("a re-imaged machine waiting for the agent: %v, want only its MAC missing", err)
	}
	m, _ := f.s.Machine(worker)
	if needsCycle(m) {
		t.Fatal("a kexec re-image waits for a BMC cycle")
	}
	r := *m.Reprovision
	r.Via = shared.ViaBMC
	m.Reprovision = &r
	if !needsCycle(m) {
		t.Fatal("a BMC re-image does not wait for its power cycle")
	}
	m.Power.BootAt = r.PhaseAt.Add(time.Second)
	if needsCycle(m) {
		t.Fatal("a BMC re-image waits for a second power cycle")
	}
}
