package powerctl

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/internal/ipmisim"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestManagerAgainstIPMISim: commands reach a real IPMI BMC (OpenIPMI's ipmi_sim)
// through the driver Rivet builds from an import row, ipmitool sees what Rivet did, and
// the timeline records what the BMC answered; a wrong password is a clear error on the
// timeline that changes nothing, and never shows the password.
func TestManagerAgainstIPMISim(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ipmi_sim")
	testenv.RequireCommand(t, "ipmitool")
	ctx := context.Background()
	const password = "Sim-e2e-Pass-9"
	sim, err := ipmisim.Start(ctx, t.TempDir(), "rivetadm", password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sim.Stop()
		if t.Failed() {
			t.Logf("ipmi_sim output:\n%s", sim.Output())
		}
	})
	ap := &fakeApplier{store: state.New()}
	if _, err := ap.Apply(ctx, state.Register{ID: "m-sim", Mode: shared.ModeRAM, Time: t0, AdmitAuto: true}); err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	target := Target{MachineID: "m-sim", Hostname: "sim1",
		BMC: shared.BMC{Driver: shared.BMCIPMI, Address: sim.Addr(), User: "rivetadm", Password: password}}
	m := &Manager{Applier: ap, Timeout: time.Minute, Log: slog.New(slog.NewJSONHandler(&logs, nil)), // Drivers nil: driverFor
		DriverOptions: DriverOptions{IPMICipherSuite: 3, SoftOffTimeout: time.Second}} // ipmi_sim: suite 0 would try suites it cannot do first; its OS ignores the soft-off
	step := func(req shared.PowerRequest, want string) {
		t.Helper()
		start := time.Now()
		o := m.Do(ctx, target, req, "alice")
		t.Logf("rivet-figure: power %s against ipmi_sim: %s", req.Action, time.Since(start).Round(time.Millisecond))
		if !o.OK || o.State != want {
			t.Fatalf("power %s: %+v", req.Action, o)
		}
		got, err := sim.Power(ctx)
		if err != nil || got != want {
			t.Fatalf("after power %s ipmitool says %q (%v), Rivet %q", req.Action, got, err, want)
		}
		lastPowerEvent(t, ap.store, "m-sim", req.Action, "alice via ipmi rivetadm@"+sim.Addr(), want)
	}
	step(shared.PowerRequest{Action: shared.PowerOn}, "on")
	step(shared.PowerRequest{Action: shared.PowerStatus}, "on")
	step(shared.PowerRequest{Action: shared.PowerOff}, "off")
	step(shared.PowerRequest{Action: shared.PowerOn, PXEOnce: true}, "on")
	if dev, err := sim.BootDevice(); err != nil || dev != "pxe" {
		t.Fatalf("boot device after PXE once: %q (%v)", dev, err)
	}

	wrong := target
	wrong.BMC.Password = "not-the-password"
	o := m.Do(ctx, wrong, shared.PowerRequest{Action: shared.PowerOff}, "mallory")
	if o.OK || !strings.Contains(o.Error, sim.Addr()) || !strings.Contains(o.Error, "refused the login") {
		t.Fatalf("wrong password: %+v", o)
	}
	if got, _ := sim.Power(ctx); got != "on" {
		t.Fatalf("a refused login changed the power: %s", got)
	}
	ev := ap.store.Events("m-sim")
	if last := ev[len(ev)-1]; !strings.Contains(last.Message, "power off by mallory") || !strings.Contains(last.Message, "failed: ") {
		t.Fatalf("timeline after the refused login: %q", last.Message)
	}
	noSecret(t, "the outcome, timeline and commands", o, ev, ap.cmds)
	if text := logs.String(); !strings.Contains(text, "power command done") || strings.Contains(text, password) || strings.Contains(text, "not-the-password") {
		t.Fatalf("the logs (want the commands, never a password):\n%s", text)
	}
}
