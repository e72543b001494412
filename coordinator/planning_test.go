package coordinator_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/shared"
)

const roles = `
name: swarm-node
selector: {min_cores: 4, labels: {pool: swarm}}
install_disk: {smallest: {type: nvme, min_size_gb: 100}}
image: {url: /v1/images/os.raw.zst, sha256: ` + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + `}
swarm: {role: auto}
`

func TestLeaderPlansDiscoveredMachines(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := coordinatortest.StartInProcess(ctx, t.TempDir(), logger, coordinator.DaemonConfig{Plan: coordinator.PlanOptions{Settle: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	admin := c.Client(c.AdminToken)
	list, err := shared.ParseRoles([]byte(roles))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ApplyRoles(ctx, list, false); err != nil {
		t.Fatal(err)
	}
	enrol := c.Client(c.EnrolToken)
	racks := []string{"r1", "r1", "r2", "r2", "r3"}
	var expected shared.ImportRequest
	for i, rack := range racks {
		expected.Machines = append(expected.Machines, coordinatortest.Expected(i, map[string]string{"rack": rack, "pool": "swarm"}))
	}
	if _, err := admin.ImportExpected(ctx, &expected); err != nil {
		t.Fatal(err)
	}
	ids := map[shared.MachineID]string{}
	for i, rack := range racks {
		req := coordinatortest.RegisterRequest(i)
		// The agent's own word: a fact, never the operator's pool or rack.
		req.Labels = map[string]string{"rack": "r9", "pool": "swarm"}
		resp, err := enrol.Register(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		ids[resp.Machine.ID] = rack
	}
	stray, err := enrol.Register(ctx, coordinatortest.RegisterRequest(99)) // no pool label
	if err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		managersPerRack, planned := map[string]int{}, 0
		for id, rack := range ids {
			m, err := admin.Machine(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if m.State != shared.StatePlanned {
				continue
			}
			planned++
			last := m.Plan.Steps[len(m.Plan.Steps)-1]
			if last.Kind == shared.StepSwarm && last.Swarm.Role == shared.SwarmManager {
				managersPerRack[rack]++
			}
		}
		if planned == len(ids) {
			if len(managersPerRack) != 3 || managersPerRack["r1"] != 1 || managersPerRack["r2"] != 1 || managersPerRack["r3"] != 1 {
				t.Fatalf("managers per rack %v, want one in each of r1, r2, r3", managersPerRack)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d machines planned", planned, len(ids))
		}
		time.Sleep(100 * time.Millisecond)
	}
	m, err := admin.Machine(ctx, stray.Machine.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m.State != shared.StateDiscovered || !strings.Contains(m.Unmatched, "no role matches") {
		t.Fatalf("a machine without a matching role must say so: state %s, unmatched %q", m.State, m.Unmatched)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
