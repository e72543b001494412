package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/shared"
)

const cliBMCSecret = "cli-bmc-Pa55word"

// switches are fake BMCs by address (a fixed set: the map is only read).
type switches map[string]*atomic.Bool

type fakeSwitch struct{ on *atomic.Bool }

func (f fakeSwitch) Status(context.Context) (power.State, error) {
	if f.on.Load() {
		return power.StateOn, nil
	}
	return power.StateOff, nil
}
func (f fakeSwitch) On(context.Context) error                              { f.on.Store(true); return nil }
func (f fakeSwitch) Off(context.Context) error                             { f.on.Store(false); return nil }
func (f fakeSwitch) Cycle(context.Context) error                           { f.on.Store(true); return nil }
func (f fakeSwitch) SetBootDevice(context.Context, power.BootDevice) error { return nil }

// TestMachinesPower: one machine by host name, a batch by selector with progress and a
// summary, JSON, and refusals; the imported rows' BMCs are what the commands reach
// (through the coordinator's own target resolver), and no output shows the password.
func TestMachinesPower(t *testing.T) {
	sw := switches{"10.8.0.1": {}, "10.8.0.2": {}, "10.8.0.3": {}}
	c, envFile := startCoordinator(t, coordinator.DaemonConfig{Power: coordinator.PowerOptions{
		Drivers: func(b shared.BMC) (power.Driver, error) { return fakeSwitch{on: sw[b.Address]}, nil }}})
	ctx := context.Background()
	bmc := func(addr string) *shared.BMC {
		return &shared.BMC{Driver: shared.BMCIPMI, Address: addr, User: "admin", Password: cliBMCSecret}
	}
	rows := []shared.ExpectedMachine{coordinatortest.Expected(1, map[string]string{"rack": "r0"}),
		coordinatortest.Expected(2, map[string]string{"rack": "r1"}), coordinatortest.Expected(3, map[string]string{"rack": "r0"})}
	for i := range rows {
		rows[i].Hostname = []string{"node1", "node2", "node3"}[i]
		rows[i].BMC = bmc([]string{"10.8.0.1", "10.8.0.2", "10.8.0.3"}[i])
	}
	if _, err := c.Client(c.AdminToken).ImportExpected(ctx, &shared.ImportRequest{Machines: rows}); err != nil {
		t.Fatal(err)
	}
	reg, err := c.Client(c.EnrolToken).Register(ctx, coordinatortest.RegisterRequest(1)) // node1 boots; node2, node3 not yet
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	out, err := run(t, "machines", "power", "node1", "cycle", "--pxe-once", "--env-file", envFile)
	all.WriteString(out)
	if err != nil || !strings.Contains(out, "power cycle --pxe-once ok") || !strings.Contains(out, "power is on") {
		t.Fatalf("power node1 cycle: %v\n%s", err, out)
	}
	out, _ = run(t, "machines", "events", string(reg.Machine.ID), "--env-file", envFile)
	all.WriteString(out)
	if !strings.Contains(out, "power cycle (PXE once) by ") || !strings.Contains(out, "BMC reports power on") {
		t.Fatalf("the timeline lacks the power command:\n%s", out)
	}
	out, err = run(t, "machines", "power", "--selector", "rack=r0", "on", "--batch", "2", "--stagger", "1ms", "--env-file", envFile)
	all.WriteString(out)
	if err != nil || !strings.Contains(out, "[1] ") || !strings.Contains(out, "[2] ") ||
		!strings.Contains(out, "("+string(reg.Machine.ID)+"): power on ok") || !strings.Contains(out, "node3: power on ok") ||
		!strings.Contains(out, "power on: 2 machines in") || !strings.Contains(out, "2 ok, 0 failed") {
		t.Fatalf("power --selector rack=r0 on: %v\n%s", err, out)
	}
	if !sw["10.8.0.3"].Load() || sw["10.8.0.2"].Load() {
		t.Fatal("BMCs after the batch: 10.8.0.3 should be on, 10.8.0.2 untouched")
	}
	out, err = run(t, "machines", "power", "--all", "status", "--output", "json", "--env-file", envFile)
	all.WriteString(out)
	var res shared.PowerBatchResult
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res.Succeeded != 3 {
		t.Fatalf("power --all status --output json: %v\n%s", err, out)
	}
	for _, bad := range [][]string{
		{"machines", "power", "node1", "explode"},
		{"machines", "power", "node1", "status", "--pxe-once"},
		{"machines", "power", "on"},
		{"machines", "power", "--all", "--selector", "rack=r0", "on"},
		{"machines", "power", "ghost", "on"},
	} {
		out, err := run(t, append(bad, "--env-file", envFile)...)
		all.WriteString(out)
		if err == nil {
			t.Errorf("%v: no error\n%s", bad, out)
		}
	}
	if text := all.String(); !strings.Contains(text, "10.8.0.1") || strings.Contains(text, cliBMCSecret) {
		t.Fatalf("the outputs (want the BMC's address, never its password):\n%s", text)
	}
}
