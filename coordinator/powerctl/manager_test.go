package powerctl

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// newTestManager is a manager over n fake BMCs whose machines are registered in a real
// store.
func newTestManager(t *testing.T, n int) (*Manager, *fakeFleet, *fakeApplier) {
	t.Helper()
	fleet := newFleet(n)
	ap := &fakeApplier{store: state.New()}
	for _, tg := range fleet.targets {
		if _, err := ap.Apply(context.Background(), state.Register{ID: tg.MachineID, Mode: shared.ModeRAM, Time: t0, AdmitAuto: true}); err != nil {
			t.Fatalf("registering %s: %v", tg.MachineID, err)
		}
	}
	m := &Manager{Resolver: fleet, Applier: ap, Drivers: fleet.driver, Metrics: NewMetrics(prometheus.NewRegistry()), Log: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return t0.Add(time.Hour) }}
	return m, fleet, ap
}

func lastEvent(t *testing.T, s *state.Store, id shared.MachineID) shared.Event {
	t.Helper()
	evs := s.Events(id)
	if len(evs) == 0 {
		t.Fatalf("machine %s has no events", id)
	}
	return evs[len(evs)-1]
}

// lastPowerEvent wants machine id's last event to be the power command action, sent by
// "NAME via BMC" (by), with the BMC's answer want.
func lastPowerEvent(t *testing.T, s *state.Store, id shared.MachineID, action shared.PowerAction, by, want string) {
	t.Helper()
	msg := lastEvent(t, s, id).Message
	if !strings.Contains(msg, "power "+string(action)) || !strings.Contains(msg, "by "+by) || !strings.Contains(msg, "BMC reports power "+want) {
		t.Fatalf("timeline after power %s: %q", action, msg)
	}
}

// noSecret fails if the password is in any of the values as JSON; it checks that the
// JSON it searched is not empty.
func noSecret(t *testing.T, what string, vs ...any) {
	t.Helper()
	for _, v := range vs {
		b, err := json.Marshal(v)
		if err != nil || len(b) < 10 {
			t.Fatalf("%s: nothing to search (%s, %v)", what, b, err)
		}
		if strings.Contains(string(b), secret) {
			t.Fatalf("%s carries the BMC password: %s", what, b)
		}
	}
}

func TestManagerCycleWithPXEOnce(t *testing.T) {
	m, fleet, ap := newTestManager(t, 2)
	o, err := m.Run(context.Background(), "node1", shared.PowerRequest{Action: shared.PowerCycle, PXEOnce: true}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	d := fleet.drivers["10.0.0.2"]
	if !slices.Equal(d.calls, []string{"boot:pxe", "cycle", "status"}) {
		t.Fatalf("BMC calls %v", d.calls)
	}
	if !o.OK || o.State != "on" || o.MachineID != "m1" || o.Ref != "node1" || o.BMC != "ipmi admin@10.0.0.2" {
		t.Fatalf("outcome %+v", o)
	}
	ev := lastEvent(t, ap.store, "m1")
	if ev.Kind != shared.EventPower || !strings.Contains(ev.Message, "power cycle (PXE once) by alice") ||
		!strings.Contains(ev.Message, "BMC reports power on") {
		t.Fatalf("event %+v", ev)
	}
	mach, _ := ap.store.Machine("m1")
	if mach.Power.Last.Action != shared.PowerCycle || mach.Power.Last.By != "alice" || mach.Power.Last.State != "on" {
		t.Fatalf("power record %+v", mach.Power)
	}
	noSecret(t, "outcome, events, machine", o, ap.store.Events("m1"), mach, ap.cmds)
	if len(fleet.drivers["10.0.0.1"].calls) != 0 {
		t.Fatal("another machine's BMC was called")
	}
	if got := counter(t, m, "cycle", "ok"); got != 1 {
		t.Fatalf("commands{cycle,ok} = %v", got)
	}
}

func TestManagerUnreachableBMCIsAnEvent(t *testing.T) {
	m, fleet, ap := newTestManager(t, 1)
	fleet.drivers["10.0.0.1"].fail = &power.IPMIError{BMC: "10.0.0.1:623", Action: "power on", Kind: power.ErrBMCUnreachable,
		Detail: "timeout after 3 attempts (login " + secret + ")", Hint: "check the BMC's address"}
	o, err := m.Run(context.Background(), "m0", shared.PowerRequest{Action: shared.PowerOn}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if o.OK || !strings.Contains(o.Error, "BMC did not answer") {
		t.Fatalf("outcome %+v", o)
	}
	ev := lastEvent(t, ap.store, "m0")
	if !strings.Contains(ev.Message, "power on by alice") || !strings.Contains(ev.Message, "failed: ") ||
		!strings.Contains(ev.Message, "BMC did not answer") {
		t.Fatalf("event %+v", ev)
	}
	noSecret(t, "outcome and events", o, ap.store.Events("m0"), ap.cmds)
	if got := counter(t, m, "on", "unreachable"); got != 1 {
		t.Fatalf("commands{on,unreachable} = %v", got)
	}
}

func TestManagerNoBMCAndUnknown(t *testing.T) {
	m, fleet, ap := newTestManager(t, 1)
	fleet.targets[0].BMC = shared.BMC{}
	o, err := m.Run(context.Background(), "m0", shared.PowerRequest{Action: shared.PowerStatus}, "bob")
	if err != nil || o.OK || !strings.Contains(o.Error, "no BMC known") {
		t.Fatalf("no BMC: %+v, %v", o, err)
	}
	if ev := lastEvent(t, ap.store, "m0"); !strings.Contains(ev.Message, "no BMC known") {
		t.Fatalf("event %+v", ev)
	}
	if _, err := m.Run(context.Background(), "nope", shared.PowerRequest{Action: shared.PowerOn}, "bob"); !errors.Is(err, ErrUnknownTarget) {
		t.Fatalf("unknown ref: %v", err)
	}
}

func TestManagerBatch(t *testing.T) {
	m, fleet, ap := newTestManager(t, 6)
	var seen []string
	res, err := m.Batch(context.Background(), shared.PowerBatchRequest{PowerRequest: shared.PowerRequest{Action: shared.PowerOn},
		Selector: map[string]string{"rack": "r1"}, Batch: 2}, "alice", func(o shared.PowerOutcome) { seen = append(seen, o.Ref) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Succeeded != 3 || res.Failed != 0 || len(res.Outcomes) != 3 || len(seen) != 3 {
		t.Fatalf("result %+v, seen %v", res, seen)
	}
	for i, o := range res.Outcomes {
		if want := fleet.targets[2*i+1].MachineID; o.MachineID != want || o.State != "on" {
			t.Fatalf("outcome %d: %+v, want %s on", i, o, want)
		}
	}
	for addr, d := range fleet.drivers {
		if on := addr == "10.0.0.2" || addr == "10.0.0.4" || addr == "10.0.0.6"; on != d.on {
			t.Fatalf("BMC %s on=%v", addr, d.on)
		}
	}
	// An unknown ref: nothing is sent to any BMC.
	before := len(ap.cmds)
	_, err = m.Batch(context.Background(), shared.PowerBatchRequest{PowerRequest: shared.PowerRequest{Action: shared.PowerOff},
		Refs: []string{"m0", "ghost"}}, "alice", nil)
	if !errors.Is(err, ErrUnknownTarget) || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("unknown ref in a batch: %v", err)
	}
	if len(ap.cmds) != before || fleet.drivers["10.0.0.1"].calls != nil {
		t.Fatal("a batch with an unknown ref changed something")
	}
	// Cancelled before it starts: every target is reported, none switched.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err = m.Batch(ctx, shared.PowerBatchRequest{PowerRequest: shared.PowerRequest{Action: shared.PowerOff}, All: true}, "alice", nil)
	if err != nil || res.Failed != 6 || !strings.Contains(res.Outcomes[5].Error, "not started") {
		t.Fatalf("cancelled batch: %+v, %v", res, err)
	}
}

func counter(t *testing.T, m *Manager, labels ...string) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Metrics.commands.WithLabelValues(labels...).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}
