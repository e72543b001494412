package fsm

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// harness applies commands in order, as Raft would, with increasing indexes.
type harness struct {
	t     *testing.T
	fsm   *FSM
	index uint64
}

func newHarness(t *testing.T) *harness { return &harness{t: t, fsm: &FSM{Store: state.New()}} }

func (h *harness) apply(body state.Command) Outcome {
	h.t.Helper()
	data, err := Encode(body)
	if err != nil {
		h.t.Fatal(err)
	}
	h.index++
	out, _ := h.fsm.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data}).(Outcome)
	return out
}

// ok applies body, which must succeed, and returns the machine the tests follow as the
// store now holds it (agents' commands answer only a summary).
func (h *harness) ok(body state.Command) *shared.Machine {
	h.t.Helper()
	out := h.apply(body)
	if out.Err != nil {
		h.t.Fatalf("%T: %v", body, out.Err)
	}
	if res := out.Result; res.Summary != nil && res.Summary.State != h.machine().State {
		h.t.Fatalf("%T: the summary says %s, the store %s", body, res.Summary.State, h.machine().State)
	}
	return h.machine()
}

func (h *harness) machine() *shared.Machine {
	h.t.Helper()
	m, ok := h.fsm.Store.Machine(id)
	if !ok {
		h.t.Fatalf("machine %s not in the store", id)
	}
	return m
}

const id = shared.MachineID("m-00000000000000aa")

func testPlan(gen uint64) *shared.Plan {
	target := shared.DiskTarget{Serial: "SSD1"}
	img := shared.ImageSpec{URL: "/v1/images/os.raw.zst", SHA256: strings.Repeat("ab", 32)}
	return &shared.Plan{MachineID: id, Role: "worker", Generation: gen, Steps: []shared.Step{
		{Name: "disk", Kind: shared.StepDisk, Phase: shared.PhaseRAM, Disk: &shared.DiskStep{Target: target}},
		{Name: "image", Kind: shared.StepImage, Phase: shared.PhaseRAM, Image: &shared.ImageStep{Target: target, Image: img}},
		{Name: "bootcfg", Kind: shared.StepBootCfg, Phase: shared.PhaseRAM, BootCfg: &shared.BootCfgStep{Boot: shared.BootDisk}},
		{Name: "reboot", Kind: shared.StepReboot, Phase: shared.PhaseRAM, Reboot: &shared.RebootStep{}},
		{Name: "swarm", Kind: shared.StepSwarm, Phase: shared.PhaseDisk, Swarm: &shared.SwarmStep{Role: shared.SwarmWorker}},
	}}
}

func register(h *harness) {
	inv := shared.Inventory{NICs: []shared.NIC{{Name: "eth0", MAC: "52:54:00:00:00:aa"}}}
	h.ok(state.Register{ID: id, Basis: "mac", Inventory: inv, Mode: shared.ModeRAM, Version: "t", Time: t0})
}

func report(h *harness, step string, status shared.StepStatus) *shared.Machine {
	h.t.Helper()
	r := shared.StepReport{Generation: 1, Step: step, Status: status}
	if status == shared.StepFailed {
		r.Error, r.Hint = "disk SSD1 not found", "check the role's install_disk"
	}
	return h.ok(state.Report{ID: id, Report: r, Time: t0})
}

func TestLifecycleFromDiscoveredToReady(t *testing.T) {
	h := newHarness(t)
	register(h)
	m := h.ok(state.SetPlan{ID: id, Role: "worker", Plan: testPlan(1), Time: t0})
	if m.State != shared.StatePlanned {
		t.Fatalf("after plan: %s", m.State)
	}
	if m = report(h, "disk", shared.StepRunning); m.State != shared.StateProvisioning {
		t.Fatalf("after first step started: %s, want provisioning", m.State)
	}
	for _, s := range []string{"disk", "image", "bootcfg", "reboot"} {
		m = report(h, s, shared.StepSucceeded)
	}
	if m.State != shared.StateProvisioning || m.Boot != shared.BootDisk {
		t.Fatalf("after RAM steps: %s boot %s, want provisioning boot disk", m.State, m.Boot)
	}
	// A RAM-mode check-in is not a disk boot.
	if m = h.ok(state.Checkin{ID: id, Mode: shared.ModeRAM, Time: t0}); m.State != shared.StateProvisioning {
		t.Fatalf("RAM check-in moved the machine to %s", m.State)
	}
	if m = h.ok(state.Checkin{ID: id, Mode: shared.ModeService, Time: t0}); m.State != shared.StateInstalled {
		t.Fatalf("first disk boot: %s, want installed", m.State)
	}
	if m = report(h, "swarm", shared.StepRunning); m.State != shared.StateJoining {
		t.Fatalf("swarm started: %s, want joining", m.State)
	}
	if m = report(h, "swarm", shared.StepSucceeded); m.State != shared.StateReady {
		t.Fatalf("all done: %s, want ready", m.State)
	}
}

func TestFailedStepThenRetry(t *testing.T) {
	h := newHarness(t)
	register(h)
	h.ok(state.SetPlan{ID: id, Role: "worker", Plan: testPlan(1), Time: t0})
	report(h, "disk", shared.StepRunning)
	m := report(h, "disk", shared.StepFailed)
	if m.State != shared.StateFailed || m.LastError == nil || m.LastError.Step != "disk" || m.LastError.Hint == "" {
		t.Fatalf("failed step not recorded: %+v", m)
	}
	m = h.ok(state.Action{ID: id, Action: shared.ActionRetry, By: "alice", Time: t0})
	if m.State != shared.StatePlanned || m.Steps[0].Status != shared.StepPending || m.LastError != nil {
		t.Fatalf("after retry: %s %+v", m.State, m.Steps[0])
	}
	res := h.apply(state.Action{ID: id, Action: shared.ActionRetry, Time: t0})
	if state.KindOf(res.Err) != state.KindConflict {
		t.Fatalf("retrying a machine that is not failed: %+v, want a conflict", res.Err)
	}
}

func TestStaleGenerationIsRefused(t *testing.T) {
	h := newHarness(t)
	register(h)
	h.ok(state.SetPlan{ID: id, Role: "worker", Plan: testPlan(1), Time: t0})
	res := h.apply(state.Report{ID: id, Report: shared.StepReport{Generation: 7, Step: "disk", Status: shared.StepRunning}, Time: t0})
	if state.KindOf(res.Err) != state.KindConflict {
		t.Fatalf("report for another generation: %+v, want a conflict", res.Err)
	}
}

func TestLostIsAHintAndReturns(t *testing.T) {
	h := newHarness(t)
	register(h)
	h.ok(state.SetPlan{ID: id, Role: "worker", Plan: testPlan(1), Time: t0})
	report(h, "disk", shared.StepRunning)
	m := h.ok(state.Gossip{ID: id, Alive: false, Reason: "failed", Time: t0})
	if m.State != shared.StateLost || m.LostFrom != shared.StateProvisioning {
		t.Fatalf("lost: %s from %s", m.State, m.LostFrom)
	}
	if m.Plan == nil || m.Steps[0].Status != shared.StepRunning {
		t.Fatal("losing a machine must not touch its plan")
	}
	if m = h.ok(state.Gossip{ID: id, Alive: true, Time: t0}); m.State != shared.StateProvisioning {
		t.Fatalf("back: %s, want provisioning", m.State)
	}
}

func TestRetireRevokesAndRegisterDoesNotDuplicate(t *testing.T) {
	h := newHarness(t)
	register(h)
	register(h)
	if n := len(h.fsm.Store.Machines()); n != 1 {
		t.Fatalf("%d machines after registering twice", n)
	}
	gen, known := h.fsm.Store.TokenGen(id)
	m := h.ok(state.Action{ID: id, Action: shared.ActionRetire, Time: t0})
	if after, _ := h.fsm.Store.TokenGen(id); !known || m.State != shared.StateRetired || m.Boot != shared.BootNone || after != gen+1 {
		t.Fatalf("retire: %s %s gen %d → %d (known %v)", m.State, m.Boot, gen, after, known)
	}
	if m = h.ok(state.Action{ID: id, Action: shared.ActionRelease, Time: t0}); m.State != shared.StateDiscovered {
		t.Fatalf("release: %s", m.State)
	}
}

// TestSnapshotRestoresExactly runs a busy history, snapshots through Raft's own sink and
// restores into an empty FSM: the digests must be equal.
func TestSnapshotRestoresExactly(t *testing.T) {
	h := newHarness(t)
	register(h)
	h.ok(state.SetPlan{ID: id, Role: "worker", Plan: testPlan(1), Time: t0})
	report(h, "disk", shared.StepRunning)
	h.apply(state.PutRole{Role: shared.Role{Name: "worker"}, Time: t0})
	h.apply(state.PutToken{Token: state.Token{ID: "t1", Name: "alice", Role: "viewer", SecretHash: "x", CreatedAt: t0}})
	h.apply(state.EndSessions{TokenID: "t1", Gen: 0})
	h.apply(state.PutCoordinator{Coordinator: state.Coordinator{ID: "c1", RaftAddr: "127.0.0.1:1", APIAddr: "127.0.0.1:2"}})

	snap, err := h.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	store := raft.NewInmemSnapshotStore()
	sink, err := store.Create(raft.SnapshotVersionMax, h.index, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	_, rc, err := store.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	restored := &FSM{Store: state.New()}
	if err := restored.Restore(rc); err != nil {
		t.Fatal(err)
	}
	want, _ := h.fsm.Store.Digest()
	got, _ := restored.Store.Digest()
	if got != want {
		t.Fatalf("restored digest %+v, want %+v", got, want)
	}
	if m, ok := restored.Store.MachineByMAC(mustMAC("52:54:00:00:00:aa")); !ok || m.ID != id {
		t.Fatal("the MAC index was not rebuilt on restore")
	}
	if tok, _ := restored.Store.Token("t1"); tok.SessionGen != 1 {
		t.Fatalf("restored session generation %d, want 1", tok.SessionGen)
	}
}

// TestEndSessionsRaisesTheGeneration: a logout moves the token's session generation past
// the one the session was issued at; a replayed or older logout changes nothing; an
// unknown token is refused.
func TestEndSessionsRaisesTheGeneration(t *testing.T) {
	h := newHarness(t)
	h.apply(state.PutToken{Token: state.Token{ID: "t1", Name: "alice", Role: "admin", SecretHash: "x", CreatedAt: t0}})
	for i, step := range []struct {
		gen  uint64
		want string
	}{{0, "1"}, {0, "1"}, {1, "2"}, {0, "2"}, {5, "6"}} {
		res := h.apply(state.EndSessions{TokenID: "t1", Gen: step.gen})
		if res.Err != nil || res.Result.Value != step.want {
			t.Fatalf("step %d: logout of generation %d gave %q (%v), want generation %s", i, step.gen, res.Result.Value, res.Err, step.want)
		}
	}
	if tok, _ := h.fsm.Store.Token("t1"); tok.SessionGen != 6 || tok.Name != "alice" || tok.SecretHash != "x" {
		t.Fatalf("token after logouts: %+v", tok)
	}
	if res := h.apply(state.EndSessions{TokenID: "nope"}); state.KindOf(res.Err) != state.KindNotFound {
		t.Fatalf("logout of an unknown token: %+v, want not found", res.Err)
	}
}

func TestUnknownCommandPanicsLoudly(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("an unknown command type must stop this coordinator, not diverge silently")
		}
	}()
	Apply(state.New(), []byte{250, '{', '}'}, 1)
}

// Every command of the first release is of protocol 1, so a cluster of first-release
// coordinators never waits for anything; RaiseProtocol, newer, is of protocol 2. Each
// type byte from 1 to the newest must map to a protocol, never above this build's.
func TestEveryCommandHasAProtocol(t *testing.T) {
	for _, cmd := range commandBodies() {
		since, err := Since(cmd)
		if err != nil {
			t.Fatalf("%T: %v", cmd, err)
		}
		typ, _ := typeOf(cmd)
		want := shared.FirstProtocol
		if typ > TypePowerRecover { // the first release's newest type
			want = 2
		}
		if since != want || since > shared.Protocol {
			t.Errorf("%T (type %d) is of protocol %d, want %d (this build speaks %d)", cmd, typ, since, want, shared.Protocol)
		}
	}
}

func TestMalformedBodyIsAnError(t *testing.T) {
	res := Apply(state.New(), []byte{byte(TypeRegister), '{'}, 1)
	if res.Err == nil {
		t.Fatal("a malformed body must return an error")
	}
}

func mustMAC(s string) []byte {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

// TestRoleThatInstallsNothingAdoptsTheHost: a plan with only disk-phase steps skips the
// install: the machine is installed at once and boots from its disk.
func TestRoleThatInstallsNothingAdoptsTheHost(t *testing.T) {
	h := newHarness(t)
	register(h)
	plan := &shared.Plan{MachineID: id, Role: "swarm-host", Generation: 1, Steps: []shared.Step{
		{Name: "swarm", Kind: shared.StepSwarm, Phase: shared.PhaseDisk, Swarm: &shared.SwarmStep{Role: shared.SwarmWorker}},
	}}
	m := h.ok(state.SetPlan{ID: id, Role: "swarm-host", Plan: plan, Time: t0})
	if m.State != shared.StateInstalled || m.Boot != shared.BootDisk {
		t.Fatalf("adopted host: %s boot %s, want installed boot disk", m.State, m.Boot)
	}
	if m = report(h, "swarm", shared.StepSucceeded); m.State != shared.StateReady {
		t.Fatalf("after the swarm step: %s, want ready", m.State)
	}
}
