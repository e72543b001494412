package state

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// swarmFixture is a store with adopted hosts (their plan is the swarm step alone), each
// with its swarm step's attempt 1 running: the step is due.
type swarmFixture struct {
	t     *testing.T
	s     *Store
	index uint64
	now   time.Time
}

const (
	mgr1   = shared.MachineID("m-00000000000000a1") // designated to create the swarm
	mgr2   = shared.MachineID("m-00000000000000a2")
	mgr3   = shared.MachineID("m-00000000000000a3")
	worker = shared.MachineID("m-00000000000000b1")
)

func newSwarmFixture(t *testing.T) *swarmFixture {
	f := &swarmFixture{t: t, s: New(), now: time.Unix(1_700_000_000, 0).UTC()}
	f.add(mgr1, shared.SwarmManager, true, "10.0.0.1")
	f.add(mgr2, shared.SwarmManager, false, "10.0.0.2")
	f.add(mgr3, shared.SwarmManager, false, "10.0.0.3")
	f.add(worker, shared.SwarmWorker, false, "10.0.0.9")
	return f
}

func (f *swarmFixture) next() uint64 { f.index++; return f.index }

func (f *swarmFixture) add(id shared.MachineID, role string, init bool, addr string) {
	f.t.Helper()
	f.s.ApplyRegister(Register{ID: id, Mode: shared.ModeService, Addr: addr, Time: f.now}, f.next())
	f.plan(id, role, init)
	f.running(id, 1)
}

func (f *swarmFixture) plan(id shared.MachineID, role string, init bool) outcome {
	f.t.Helper()
	plan := &shared.Plan{MachineID: id, Role: "swarm", Generation: 2, Steps: []shared.Step{{Name: "swarm",
		Kind: shared.StepSwarm, Phase: shared.PhaseDisk, Swarm: &shared.SwarmStep{Role: role, Init: init}}}}
	return out(f.s.ApplySetPlan(SetPlan{ID: id, Role: "swarm", Plan: plan, Time: f.now}, f.next()))
}

func (f *swarmFixture) running(id shared.MachineID, attempt int) {
	f.t.Helper()
	res := out(f.s.ApplyReport(Report{ID: id, Time: f.now, Report: shared.StepReport{Generation: 2, Step: "swarm",
		Status: shared.StepRunning, Attempt: attempt}}, f.next()))
	if res.Err != nil {
		f.t.Fatal(res.Err)
	}
}

func (f *swarmFixture) join(id shared.MachineID) outcome {
	return out(f.s.ApplySwarmJoin(SwarmJoin{ID: id, Time: f.now}, f.next()))
}

func (f *swarmFixture) mustJoin(id shared.MachineID) *shared.SwarmJoin {
	f.t.Helper()
	res := f.join(id)
	if res.Err != nil || res.Join == nil {
		f.t.Fatalf("%s: join: %v", id, res.Err)
	}
	return res.Join
}

func (f *swarmFixture) report(id shared.MachineID, r shared.SwarmReport) outcome {
	return out(f.s.ApplySwarmReport(SwarmReport{ID: id, Report: r, Time: f.now, Rules: SwarmRules}, f.next()))
}

func (f *swarmFixture) mustReport(id shared.MachineID, r shared.SwarmReport) outcome {
	f.t.Helper()
	res := f.report(id, r)
	if res.Err != nil {
		f.t.Fatalf("%s: report: %v", id, res.Err)
	}
	return res
}

func (f *swarmFixture) digest() string {
	f.t.Helper()
	d, err := f.s.Digest()
	if err != nil {
		f.t.Fatal(err)
	}
	return d.SHA256
}

// refused applies a command that must be refused with status, and checks that it
// changed nothing at all in the replicated state.
func (f *swarmFixture) refused(what string, kind Kind, apply func() outcome) error {
	f.t.Helper()
	before := f.digest()
	res := apply()
	if KindOf(res.Err) != kind {
		f.t.Fatalf("%s: got %+v, want a %s refusal", what, res, kind)
	}
	if res.Join != nil {
		f.t.Fatalf("%s: a refusal carries a join answer", what)
	}
	if after := f.digest(); after != before {
		f.t.Fatalf("%s: refused, but the state changed", what)
	}
	return res.Err
}

// createSwarm has mgr1 create the swarm and report it.
func (f *swarmFixture) createSwarm() {
	f.t.Helper()
	if j := f.mustJoin(mgr1); !j.Init || j.Token != "" {
		f.t.Fatalf("the designated manager is not told to init: %+v", j)
	}
	f.mustReport(mgr1, shared.SwarmReport{NodeID: "n1", ClusterID: "c1", Addr: "10.0.0.1:2377",
		ManagerToken: "SWMTKN-1-mgr-first", WorkerToken: "SWMTKN-1-wrk"})
}

func TestOnlyTheDesignatedManagerIsToldToInit(t *testing.T) {
	f := newSwarmFixture(t)
	if sw := f.s.Swarm(); sw.InitBy != mgr1 {
		t.Fatalf("SetPlan recorded initiator %q, want %s", sw.InitBy, mgr1)
	}
	// mgr2 and the worker ask first: neither is told to init, however often it asks.
	for _, id := range []shared.MachineID{mgr2, worker, mgr2} {
		res := f.join(id)
		if KindOf(res.Err) != KindPending || res.Join != nil {
			t.Fatalf("%s asked before the swarm exists: %+v, want pending", id, res)
		}
		if r, _ := res.Err.(*Rejected); r == nil || r.Subject != string(mgr1) {
			t.Errorf("pending refusal %+v does not name the creator", res.Err)
		}
	}
	// A later plan that also says init is not a second creator.
	late := shared.MachineID("m-00000000000000a4")
	f.s.ApplyRegister(Register{ID: late, Mode: shared.ModeService, Addr: "10.0.0.4", Time: f.now}, f.next())
	f.plan(late, shared.SwarmManager, true)
	f.running(late, 1)
	if m, _ := f.s.Machine(late); m.Plan.Steps[0].Swarm.Init {
		t.Fatal("a second plan kept init while the designated creator is planned")
	}
	if res := f.join(late); KindOf(res.Err) != KindPending {
		t.Fatalf("a second init plan: %+v, want pending", res)
	}
	if sw := f.s.Swarm(); sw.InitBy != mgr1 {
		t.Fatalf("initiator moved to %s", sw.InitBy)
	}
	f.createSwarm()
	// Once the swarm exists even the creator is told to join, not to init.
	f.running(mgr1, 2)
	if j := f.mustJoin(mgr1); j.Init || j.ClusterID != "c1" {
		t.Fatalf("the creator asking again after creating the swarm: %+v", j)
	}
}

func TestOnlyTheInitiatorReportsANewSwarm(t *testing.T) {
	f := newSwarmFixture(t)
	f.refused("mgr2 reports a swarm of its own", KindForbidden, func() outcome {
		return f.report(mgr2, shared.SwarmReport{NodeID: "evil", ClusterID: "evil", Addr: "10.0.0.2:2377",
			ManagerToken: "SWMTKN-1-evil", WorkerToken: "SWMTKN-1-evil"})
	})
	f.refused("the worker reports a swarm", KindForbidden, func() outcome {
		return f.report(worker, shared.SwarmReport{NodeID: "evil", ClusterID: "evil", ManagerToken: "a", WorkerToken: "b"})
	})
	f.createSwarm()
	// A repeated creator report (its first answer was lost) keeps the tokens, which may
	// have been rotated since.
	f.mustReport(mgr1, shared.SwarmReport{NodeID: "n1", ClusterID: "c1", Addr: "10.0.0.1:2377",
		ManagerToken: "SWMTKN-1-other", WorkerToken: "SWMTKN-1-other"})
	if sw := f.s.Swarm(); sw.ManagerToken != "SWMTKN-1-mgr-first" || sw.WorkerToken != "SWMTKN-1-wrk" {
		t.Fatal("a repeated creator report replaced the tokens")
	}
	f.refused("the creator names another swarm", KindConflict, func() outcome {
		return f.report(mgr1, shared.SwarmReport{NodeID: "n1", ClusterID: "c2"})
	})
}

func TestJoinTokensByRoleOncePerAttempt(t *testing.T) {
	f := newSwarmFixture(t)
	f.createSwarm()
	w := f.mustJoin(worker)
	if w.Token != "SWMTKN-1-wrk" || w.Role != shared.SwarmWorker || w.ClusterID != "c1" ||
		len(w.RemoteAddrs) != 1 || w.RemoteAddrs[0] != "10.0.0.1:2377" {
		t.Fatalf("worker join = %+v", w)
	}
	if m := f.mustJoin(mgr2); m.Token != "SWMTKN-1-mgr-first" || m.Role != shared.SwarmManager {
		t.Fatalf("manager join = %+v", m)
	}
	// A second fetch in the same attempt: the same answer without the token.
	again := f.mustJoin(worker)
	if again.Token != "" || again.ClusterID != "c1" || len(again.RemoteAddrs) != 1 {
		t.Fatalf("second fetch in attempt 1 = %+v, want the answer without a token", again)
	}
	// The next attempt gets it again, once.
	f.running(worker, 2)
	if j := f.mustJoin(worker); j.Token != "SWMTKN-1-wrk" {
		t.Fatalf("attempt 2 got no token: %+v", j)
	}
	if j := f.mustJoin(worker); j.Token != "" {
		t.Fatal("attempt 2 got the token twice")
	}
	// Whatever it asks, the worker never saw the manager token.
	for range 3 {
		if j := f.mustJoin(worker); j.Token == "SWMTKN-1-mgr-first" {
			t.Fatal("a worker got the manager token")
		}
	}
}

func TestNothingForAStepThatIsNotDue(t *testing.T) {
	f := newSwarmFixture(t)
	f.createSwarm()
	// mgr2's swarm step finishes; a report or a token fetch afterwards is not due.
	f.mustReport(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", Addr: "10.0.0.2:2377"})
	f.s.ApplyReport(Report{ID: mgr2, Time: f.now, Report: shared.StepReport{Generation: 2, Step: "swarm",
		Status: shared.StepSucceeded, Attempt: 1}}, f.next())
	f.refused("a report after the step succeeded", KindConflict, func() outcome {
		return f.report(mgr2, shared.SwarmReport{NodeID: "n2-again", ClusterID: "c1", Addr: "10.0.0.2:2377"})
	})
	f.refused("a token fetch after the step succeeded", KindConflict, func() outcome { return f.join(mgr2) })

	// A machine still installing: its earlier steps are not done.
	inst := shared.MachineID("m-00000000000000c1")
	f.s.ApplyRegister(Register{ID: inst, Mode: shared.ModeRAM, Addr: "10.0.0.20", Time: f.now}, f.next())
	plan := &shared.Plan{MachineID: inst, Role: "swarm", Generation: 2, Steps: []shared.Step{
		{Name: "disk", Kind: shared.StepDisk, Phase: shared.PhaseRAM, Disk: &shared.DiskStep{Target: shared.DiskTarget{Serial: "S"}}},
		{Name: "swarm", Kind: shared.StepSwarm, Phase: shared.PhaseDisk, Swarm: &shared.SwarmStep{Role: shared.SwarmManager}}}}
	f.s.ApplySetPlan(SetPlan{ID: inst, Role: "swarm", Plan: plan, Time: f.now}, f.next())
	f.refused("a report from a machine that has not installed", KindConflict, func() outcome {
		return f.report(inst, shared.SwarmReport{NodeID: "x", ClusterID: "c1", Addr: "10.0.0.20:2377"})
	})
	f.refused("a token fetch from a machine that has not installed", KindConflict, func() outcome { return f.join(inst) })

	// A planned step that has not started (no running report for an attempt).
	fresh := shared.MachineID("m-00000000000000c2")
	f.s.ApplyRegister(Register{ID: fresh, Mode: shared.ModeService, Addr: "10.0.0.21", Time: f.now}, f.next())
	f.plan(fresh, shared.SwarmWorker, false)
	f.refused("a token fetch before the step runs", KindConflict, func() outcome { return f.join(fresh) })
	f.refused("a report from an unplanned machine", KindNotFound, func() outcome {
		return f.report("m-00000000000000ff", shared.SwarmReport{NodeID: "x"})
	})
}

func TestManagerAddressRules(t *testing.T) {
	f := newSwarmFixture(t)
	f.createSwarm()
	f.refused("a manager reports another machine's address", KindForbidden, func() outcome {
		return f.report(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", Addr: "10.0.0.1:2377"})
	})
	f.refused("a manager reports a foreign address", KindForbidden, func() outcome {
		return f.report(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", Addr: "192.0.2.66:2377"})
	})
	f.refused("a manager reports its own address on another port", KindForbidden, func() outcome {
		return f.report(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", Addr: "10.0.0.2:2378"})
	})
	f.refused("a worker reports its own address as a manager's", KindForbidden, func() outcome {
		return f.report(worker, shared.SwarmReport{NodeID: "w", ClusterID: "c1", Addr: "10.0.0.9:2377"})
	})
	f.mustReport(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", Addr: "10.0.0.2:2377"})
	f.mustReport(mgr3, shared.SwarmReport{NodeID: "n3", ClusterID: "c1", Addr: "10.0.0.3:2377"})
	// Up to the limit, then no more.
	for i := range shared.MaxSwarmManagers - 2 {
		id := shared.MachineID("m-00000000000000d" + string(rune('0'+i)))
		addr := "10.0.1." + string(rune('1'+i))
		f.add(id, shared.SwarmManager, false, addr)
		res := f.report(id, shared.SwarmReport{NodeID: "x" + string(id), ClusterID: "c1", Addr: addr + ":2377"})
		if i < shared.MaxSwarmManagers-3 && res.Err != nil {
			t.Fatalf("manager %d of %d refused: %v", i+4, shared.MaxSwarmManagers, res.Err)
		}
		if i == shared.MaxSwarmManagers-3 {
			if res.Err == nil || !strings.Contains(res.Err.Error(), "the limit is 7") {
				t.Fatalf("manager %d was accepted, over the limit of %d: %+v", i+4, shared.MaxSwarmManagers, res.Err)
			}
		}
	}
	if got := len(f.s.Swarm().ManagerAddrs); got != shared.MaxSwarmManagers {
		t.Fatalf("%d manager addresses kept, want %d", got, shared.MaxSwarmManagers)
	}
	// A manager already listed may report again (its address unchanged).
	f.mustReport(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", Addr: "10.0.0.2:2377"})
	// A retired manager's address is neither kept nor counted: the refused one now fits.
	if res := out(f.s.ApplyAction(Action{ID: "m-00000000000000d0", Action: shared.ActionRetire, Time: f.now}, f.next())); res.Err != nil {
		t.Fatal(res.Err)
	}
	f.mustReport("m-00000000000000d4", shared.SwarmReport{NodeID: "x", ClusterID: "c1", Addr: "10.0.1.5:2377"})
	addrs := f.s.Swarm().ManagerAddrs
	if len(addrs) != shared.MaxSwarmManagers || slices.Contains(addrs, "10.0.1.1:2377") || !slices.Contains(addrs, "10.0.1.5:2377") {
		t.Fatalf("after retiring a manager: %v", addrs)
	}
}

func TestManagerTokenRotatedAfterThePlannedManagersJoined(t *testing.T) {
	f := newSwarmFixture(t)
	f.createSwarm()
	for _, id := range []shared.MachineID{mgr2, mgr3} {
		if j := f.mustJoin(id); j.Token != "SWMTKN-1-mgr-first" {
			t.Fatalf("%s got no manager token", id)
		}
	}
	if res := f.mustReport(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", Addr: "10.0.0.2:2377"}); res.Value == RotateManagerToken {
		t.Fatal("told to rotate before every planned manager joined")
	}
	f.refused("a rotation nobody asked for", KindForbidden, func() outcome {
		return f.report(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", ManagerToken: "SWMTKN-1-evil", Rotated: true})
	})
	res := f.mustReport(mgr3, shared.SwarmReport{NodeID: "n3", ClusterID: "c1", Addr: "10.0.0.3:2377"})
	if res.Value != RotateManagerToken {
		t.Fatalf("the manager completing the set was not told to rotate: %+v", res)
	}
	f.refused("a rotation from a manager not asked", KindForbidden, func() outcome {
		return f.report(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", ManagerToken: "SWMTKN-1-evil", Rotated: true})
	})
	f.refused("a worker's rotation", KindForbidden, func() outcome {
		return f.report(worker, shared.SwarmReport{NodeID: "w", ManagerToken: "SWMTKN-1-evil", Rotated: true})
	})
	f.mustReport(mgr3, shared.SwarmReport{NodeID: "n3", ClusterID: "c1", Addr: "10.0.0.3:2377",
		ManagerToken: "SWMTKN-1-mgr-rotated", Rotated: true})
	sw := f.s.Swarm()
	if sw.ManagerToken != "SWMTKN-1-mgr-rotated" || sw.ManagerTokenOut || sw.RotateBy != "" || sw.WorkerToken != "SWMTKN-1-wrk" {
		t.Fatalf("after the rotation: manager token replaced %v, out %v, rotate by %q",
			sw.ManagerToken == "SWMTKN-1-mgr-rotated", sw.ManagerTokenOut, sw.RotateBy)
	}
	f.refused("a second rotation report", KindForbidden, func() outcome {
		return f.report(mgr3, shared.SwarmReport{NodeID: "n3", ClusterID: "c1", ManagerToken: "SWMTKN-1-again", Rotated: true})
	})
	// With nothing handed out since, a manager re-reporting is not told to rotate again.
	if res := f.mustReport(mgr2, shared.SwarmReport{NodeID: "n2", ClusterID: "c1", Addr: "10.0.0.2:2377"}); res.Value == RotateManagerToken {
		t.Fatal("told to rotate a token nobody was given")
	}
}

// Log entries written before the rules existed replay to the state they were
// acknowledged with: an old cluster restarting rebuilds exactly what it had. (Nothing
// proposes such entries any more: the API sets Rules, and SwarmClaim is not sent.)
func TestOldSwarmEntriesReplayAsApplied(t *testing.T) {
	s := New()
	now := time.Unix(1_700_000_000, 0).UTC()
	s.ApplyRegister(Register{ID: mgr2, Mode: shared.ModeService, Time: now}, 1)
	if res := out(s.ApplySwarmClaim(SwarmClaim{ID: mgr2}, 2)); res.Value != string(mgr2) {
		t.Fatalf("old claim: %+v", res)
	}
	res := out(s.ApplySwarmReport(SwarmReport{ID: mgr2, Time: now, Report: shared.SwarmReport{NodeID: "n2", ClusterID: "old",
		Addr: "192.0.2.1:2377", ManagerToken: "SWMTKN-1-old-m", WorkerToken: "SWMTKN-1-old-w"}}, 3))
	if res.Err != nil {
		t.Fatalf("an old report replays as applied then: %v", res.Err)
	}
	if sw := s.Swarm(); sw.ClusterID != "old" || sw.ManagerToken != "SWMTKN-1-old-m" || len(sw.ManagerAddrs) != 1 {
		t.Fatalf("old entries replayed to %+v", sw.ManagerAddrs)
	}
	// The same report under the current rules is refused: the step is not due.
	res = out(s.ApplySwarmReport(SwarmReport{ID: mgr2, Time: now, Rules: SwarmRules, Report: shared.SwarmReport{NodeID: "n2"}}, 4))
	if KindOf(res.Err) != KindConflict {
		t.Fatalf("a current report from a machine with no due step: %+v", res.Err)
	}
}
