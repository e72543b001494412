package powerctl

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/internal/redfishbmc"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestManagerAgainstRedfishBMC: commands reach a Redfish BMC through the driver Rivet
// builds from an import row (address, user, password, pinned certificate), the machine
// behind it does what Rivet asked, and the timeline records the BMC's answer; a wrong
// password is a clear error that changes nothing and never shows the password.
func TestManagerAgainstRedfishBMC(t *testing.T) {
	ctx := context.Background()
	const password = "Redfish-e2e-Pass-7"
	chassis := redfishbmc.NewMemChassis(false)
	bmc, err := redfishbmc.New(redfishbmc.Config{User: "rivetadm", Password: password, Chassis: chassis})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- bmc.Serve() }()
	t.Cleanup(func() {
		bmc.Close()
		if err := <-served; err != nil {
			t.Errorf("the BMC's Serve: %v", err)
		}
	})
	ap := &fakeApplier{store: state.New()}
	if _, err := ap.Apply(ctx, state.Register{ID: "m-rf", Mode: shared.ModeRAM, Time: t0, AdmitAuto: true}); err != nil {
		t.Fatal(err)
	}
	row := shared.BMC{Driver: shared.BMCRedfish, Address: bmc.URL(), User: "rivetadm", Password: password,
		TLSSHA256: bmc.Fingerprint()}
	if err := row.Validate(); err != nil {
		t.Fatalf("the import row: %v", err)
	}
	target := Target{MachineID: "m-rf", Hostname: "rf1", BMC: row}
	var logs testenv.LogBuffer
	m := &Manager{Applier: ap, Timeout: time.Minute, Log: slog.New(slog.NewJSONHandler(&logs, nil))} // Drivers nil: driverFor
	step := func(req shared.PowerRequest, want string) {
		t.Helper()
		o := m.Do(ctx, target, req, "alice")
		if !o.OK || o.State != want {
			t.Fatalf("power %s: %+v", req.Action, o)
		}
		if on := chassis.On(); on != (want == "on") {
			t.Fatalf("after power %s the machine's power is on=%t, Rivet says %s", req.Action, on, want)
		}
		lastPowerEvent(t, ap.store, "m-rf", req.Action, "alice via redfish rivetadm@"+bmc.URL(), want)
	}
	step(shared.PowerRequest{Action: shared.PowerOn}, "on")
	step(shared.PowerRequest{Action: shared.PowerStatus}, "on")
	step(shared.PowerRequest{Action: shared.PowerOff}, "off")
	step(shared.PowerRequest{Action: shared.PowerOn, PXEOnce: true}, "on")
	if want := []string{"on", "shutdown", "boot Pxe", "on"}; !slices.Equal(chassis.Log(), want) {
		t.Fatalf("the machine was asked %q, want %q", chassis.Log(), want)
	}

	wrong := target
	wrong.BMC.Password = "not-the-password"
	o := m.Do(ctx, wrong, shared.PowerRequest{Action: shared.PowerOff}, "mallory")
	if o.OK || !strings.Contains(o.Error, bmc.URL()) || !strings.Contains(o.Error, "refused the login") {
		t.Fatalf("wrong password: %+v", o)
	}
	if !chassis.On() || len(chassis.Log()) != 4 {
		t.Fatalf("a refused login changed the machine: %q", chassis.Log())
	}
	ev := ap.store.Events("m-rf")
	if last := ev[len(ev)-1]; !strings.Contains(last.Message, "power off by mallory") || !strings.Contains(last.Message, "failed: ") {
		t.Fatalf("timeline after the refused login: %q", last.Message)
	}
	for _, v := range []any{o, ev, ap.cmds} {
		b, err := json.Marshal(v)
		if err != nil || strings.Contains(string(b), password) || strings.Contains(string(b), "not-the-password") {
			t.Fatalf("the outcome, timeline or commands carry a password (%v): %s", err, b)
		}
	}
	if text := logs.String(); !strings.Contains(text, "power command done") || strings.Contains(text, password) || strings.Contains(text, "not-the-password") {
		t.Fatalf("the logs (want the commands, never a password):\n%s", text)
	}
}
