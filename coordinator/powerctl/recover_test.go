package powerctl

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

func rebooting(stepAt time.Time) *shared.Machine {
	return &shared.Machine{ID: "m", State: shared.StateProvisioning, Boot: shared.BootDisk,
		Agent: shared.AgentInfo{Mode: shared.ModeRAM, LastSeen: stepAt.Add(-time.Minute)},
		Plan: &shared.Plan{Generation: 7, Steps: []shared.Step{{Name: "bootcfg", Kind: shared.StepBootCfg},
			{Name: "reboot", Kind: shared.StepReboot}}},
		Steps: []shared.StepState{{Name: "bootcfg", Status: shared.StepSucceeded},
			{Name: "reboot", Status: shared.StepRunning, StartedAt: stepAt}},
		Power: shared.PowerInfo{BootDiskPlan: 7}}
}

func TestDecide(t *testing.T) {
	p := RecoverPolicy{After: 10 * time.Minute, Attempts: 2}
	at := t0
	cases := []struct {
		name string
		m    func() *shared.Machine
		bmc  bool
		now  time.Time
		want Decision
	}{
		{"before the deadline", func() *shared.Machine { return rebooting(at) }, true, at.Add(9 * time.Minute), Decision{}},
		{"no BMC", func() *shared.Machine { return rebooting(at) }, false, at.Add(time.Hour), Decision{}},
		{"first attempt", func() *shared.Machine { return rebooting(at) }, true, at.Add(10 * time.Minute),
			Decision{Act: ActCycle, Since: at, Attempt: 1, Waited: 10 * time.Minute}},
		{"checked in", func() *shared.Machine {
			m := rebooting(at)
			m.Agent.LastSeen = at.Add(time.Minute)
			return m
		}, true, at.Add(time.Hour), Decision{}},
		{"second attempt waits after the first", func() *shared.Machine {
			m := rebooting(at)
			m.Power.RecoverSince, m.Power.RecoverAttempts, m.Power.RecoverAt = at, 1, at.Add(10*time.Minute)
			return m
		}, true, at.Add(19 * time.Minute), Decision{}},
		{"second attempt", func() *shared.Machine {
			m := rebooting(at)
			m.Power.RecoverSince, m.Power.RecoverAttempts, m.Power.RecoverAt = at, 1, at.Add(10*time.Minute)
			return m
		}, true, at.Add(20 * time.Minute), Decision{Act: ActCycle, Since: at, Attempt: 2, Waited: 20 * time.Minute}},
		{"gives up", func() *shared.Machine {
			m := rebooting(at)
			m.Power.RecoverSince, m.Power.RecoverAttempts, m.Power.RecoverAt = at, 2, at.Add(20*time.Minute)
			return m
		}, true, at.Add(30 * time.Minute), Decision{Act: ActGiveUp, Since: at, Waited: 30 * time.Minute,
			Reason: "2 power cycle(s) with PXE once did not bring it back"}},
		{"a new reboot starts the count again", func() *shared.Machine {
			m := rebooting(at.Add(time.Hour))
			m.Power.RecoverSince, m.Power.RecoverAttempts, m.Power.RecoverAt = at, 2, at.Add(20*time.Minute)
			return m
		}, true, at.Add(70 * time.Minute), Decision{Act: ActCycle, Since: at.Add(time.Hour), Attempt: 1, Waited: 10 * time.Minute}},
		{"ready machines are left alone", func() *shared.Machine {
			m := rebooting(at)
			m.State = shared.StateReady
			return m
		}, true, at.Add(time.Hour), Decision{}},
		{"powered on by an operator, never registered", func() *shared.Machine {
			return &shared.Machine{ID: "m", State: shared.StateDiscovered, Power: shared.PowerInfo{BootAt: at}}
		}, true, at.Add(10 * time.Minute), Decision{Act: ActCycle, Since: at, Attempt: 1, Waited: 10 * time.Minute}},
		{"recovery off", func() *shared.Machine { return rebooting(at) }, true, at.Add(time.Hour), Decision{}},
		{"boot disk once the bootcfg step pointed at the disk", func() *shared.Machine {
			m := rebooting(at)
			m.Power.BootDiskPlan = 0
			return m
		}, true, at, Decision{Act: ActBootDisk}},
		{"boot disk failed a moment ago: not yet again", func() *shared.Machine {
			m := rebooting(at)
			m.Power.BootDiskPlan = 0
			m.Power.Last = shared.PowerLast{Action: shared.PowerBootDisk, At: at, Error: "BMC did not answer"}
			return m
		}, true, at.Add(time.Second), Decision{}},
	}
	for _, c := range cases {
		pol := p
		if c.name == "recovery off" {
			pol.After = 0
		}
		if got := Decide(c.m(), c.bmc, c.now, pol); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestRecoverPass: an operator's power-on that is not followed by a registration is
// cycled with PXE once, at most Attempts times, then the machine fails with the reason;
// a second leader over the same state does not cycle it again.
func TestRecoverPass(t *testing.T) {
	m, fleet, ap := newTestManager(t, 2)
	now := t0.Add(time.Hour)
	m.Now = func() time.Time { return now }
	ctx := context.Background()
	if o, _ := m.Run(ctx, "m0", shared.PowerRequest{Action: shared.PowerOn}, "alice"); !o.OK {
		t.Fatalf("power on: %+v", o)
	}
	// m1 was powered on too and registers at once: it is left alone.
	if o, _ := m.Run(ctx, "m1", shared.PowerRequest{Action: shared.PowerOn}, "alice"); !o.OK {
		t.Fatalf("power on: %+v", o)
	}
	if _, err := ap.Apply(ctx, state.Checkin{ID: "m1", Mode: shared.ModeRAM, Time: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	other := &Manager{Resolver: fleet, Applier: ap, Drivers: fleet.driver, Log: m.Log, Now: m.Now} // a new leader
	p := RecoverPolicy{After: 10 * time.Minute, Attempts: 2}
	cycles := func() int {
		n := 0
		for _, c := range fleet.drivers["10.0.0.1"].calls {
			if c == "cycle" {
				n++
			}
		}
		return n
	}
	pass := func(mgr *Manager, at time.Duration) {
		now = t0.Add(time.Hour + at)
		mgr.RecoverPass(ctx, ap.store, p)
	}
	pass(m, 5*time.Minute)
	if cycles() != 0 {
		t.Fatal("cycled before the deadline")
	}
	pass(m, 10*time.Minute)
	pass(other, 10*time.Minute) // the new leader sees the attempt in the state
	if cycles() != 1 {
		t.Fatalf("%d cycles after the first deadline, want 1", cycles())
	}
	// Two leaders deciding at once: the second claim of the same attempt is refused.
	mach, _ := ap.store.Machine("m0")
	if _, err := ap.Apply(ctx, state.PowerRecover{ID: "m0", Since: mach.Power.RecoverSince, Attempt: 1, Of: 2, Time: now}); err == nil {
		t.Fatal("a second claim of attempt 1 was accepted")
	}
	calls := fleet.drivers["10.0.0.1"].calls
	if !slices.Equal(calls[len(calls)-3:], []string{"boot:pxe", "cycle", "status"}) {
		t.Fatalf("BMC calls %v", calls)
	}
	pass(other, 20*time.Minute)
	pass(m, 20*time.Minute)
	if cycles() != 2 {
		t.Fatalf("%d cycles after the second deadline, want 2", cycles())
	}
	pass(m, 30*time.Minute)
	mach, _ = ap.store.Machine("m0")
	if mach.State != shared.StateFailed || mach.LastError == nil || !strings.Contains(mach.LastError.Message, "2 power cycle(s)") {
		t.Fatalf("after the attempts: %s %+v", mach.State, mach.LastError)
	}
	if cycles() != 2 || len(fleet.drivers["10.0.0.2"].calls) != 2 {
		t.Fatalf("cycles %d; m1's BMC calls %v", cycles(), fleet.drivers["10.0.0.2"].calls)
	}
	var text []string
	for _, ev := range ap.store.Events("m0") {
		if ev.Kind == shared.EventPower {
			text = append(text, ev.Message)
		}
	}
	all := strings.Join(text, "\n")
	for _, want := range []string{"power on by alice", "attempt 1 of 2", "power cycle (PXE once) by coordinator", "attempt 2 of 2", "gives up"} {
		if !strings.Contains(all, want) {
			t.Fatalf("timeline lacks %q:\n%s", want, all)
		}
	}
	noSecret(t, "the timeline", ap.store.Events("m0"), ap.cmds)
}

// TestRecoverPassExpectedMachine: an imported machine whose power-on does not bring a
// registration (its first network boot failed) is cycled with PXE once like a machine
// after a reboot, the attempts and the reason kept on its row; when it registers at
// last, its timeline starts with those power commands.
func TestRecoverPassExpectedMachine(t *testing.T) {
	m, fleet, ap := newTestManager(t, 0)
	now := t0.Add(time.Hour)
	m.Now = func() time.Time { return now }
	ctx := context.Background()
	fleet.targets = append(fleet.targets, Target{Key: "rack1-node7", Hostname: "rack1-node7", State: shared.StateExpected,
		BMC: shared.BMC{Driver: shared.BMCIPMI, Address: "10.0.0.7", User: "admin", Password: secret}})
	bmc := &fakeDriver{}
	fleet.drivers["10.0.0.7"] = bmc
	if _, err := ap.Apply(ctx, state.PutExpected{Machines: []shared.ExpectedMachine{{Serial: "SER7", Hostname: "rack1-node7"}}, Time: now}); err != nil {
		t.Fatal(err)
	}
	if o, _ := m.Run(ctx, "rack1-node7", shared.PowerRequest{Action: shared.PowerOn, PXEOnce: true}, "alice"); !o.OK {
		t.Fatalf("power on: %+v", o)
	}
	row := func() shared.ExpectedMachine {
		t.Helper()
		for _, e := range ap.store.Expected() {
			if e.Key() == "rack1-node7" {
				return e
			}
		}
		t.Fatal("the row is gone")
		return shared.ExpectedMachine{}
	}
	if got := row().Power.BootAt; !got.Equal(now) {
		t.Fatalf("the row's boot time is %v, want the power-on's %v", got, now)
	}
	p := RecoverPolicy{After: 10 * time.Minute, Attempts: 2}
	cycles := func() int { return strings.Count(strings.Join(bmc.calls, " "), "cycle") }
	for _, tt := range []struct {
		at     time.Duration
		cycles int
	}{{5 * time.Minute, 0}, {10 * time.Minute, 1}, {15 * time.Minute, 1}, {20 * time.Minute, 2}, {30 * time.Minute, 2}, {40 * time.Minute, 2}} {
		now = t0.Add(time.Hour + tt.at)
		m.RecoverPass(ctx, ap.store, p)
		if cycles() != tt.cycles {
			t.Fatalf("%d cycles %s after the power-on, want %d (BMC calls %v)", cycles(), tt.at, tt.cycles, bmc.calls)
		}
	}
	if r := row(); r.Power.RecoverAttempts != 2 || !strings.Contains(r.Power.GaveUp, "2 power cycle(s) with PXE once") {
		t.Fatalf("the row's power record after the attempts: %+v", r.Power)
	}
	// It registers at last (the operator fixed its cable): the row's events are its own.
	if _, err := ap.Apply(ctx, state.Register{ID: "m7", Mode: shared.ModeRAM, Time: now, AdmitAuto: true,
		Inventory: shared.Inventory{System: shared.System{Serial: "SER7"}}}); err != nil {
		t.Fatal(err)
	}
	var text []string
	for _, ev := range ap.store.Events("m7") {
		text = append(text, ev.Message)
	}
	all := strings.Join(text, "\n")
	for _, want := range []string{"power on (PXE once) by alice", "attempt 1 of 2", "attempt 2 of 2", "gives up"} {
		if !strings.Contains(all, want) {
			t.Fatalf("machine m7's timeline lacks %q:\n%s", want, all)
		}
	}
	if r := row(); r.MachineID != "m7" {
		t.Fatalf("the row is not bound to m7: %+v", r)
	}
	if evs := ap.store.Events("expected:rack1-node7"); len(evs) != 0 {
		t.Fatalf("the row's timeline still holds %d events", len(evs))
	}
	noSecret(t, "the timeline", ap.store.Events("m7"), ap.cmds)
}
