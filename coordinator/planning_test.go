package coordinator_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/internal/testenv"
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

	managersPerRack := map[string]int{}
	testenv.Eventually(t, 20*time.Second, "every machine planned", func() error {
		clear(managersPerRack)
		planned := 0
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
		if planned != len(ids) {
			return fmt.Errorf("%d of %d machines planned", planned, len(ids))
		}
		return nil
	})
	if len(managersPerRack) != 3 || managersPerRack["r1"] != 1 || managersPerRack["r2"] != 1 || managersPerRack["r3"] != 1 {
		t.Fatalf("managers per rack %v, want one in each of r1, r2, r3", managersPerRack)
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

// TestRoleChangeForgetsStaleReasons: a machine lost while no role matched it must not keep
// that reason once a role is applied, and must be planned when it comes back, although
// the planner has already passed over the new roles.
func TestRoleChangeForgetsStaleReasons(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := coordinatortest.StartInProcess(ctx, t.TempDir(), logger,
		coordinator.DaemonConfig{GossipAddr: "off", Plan: coordinator.PlanOptions{Settle: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	admin, enrol := c.Client(c.AdminToken), c.Client(c.EnrolToken)
	if _, err := admin.ImportExpected(ctx, &shared.ImportRequest{Machines: []shared.ExpectedMachine{
		coordinatortest.Expected(1, map[string]string{"pool": "swarm"})}}); err != nil {
		t.Fatal(err)
	}
	lost, err := enrol.Register(ctx, coordinatortest.RegisterRequest(1))
	if err != nil {
		t.Fatal(err)
	}
	stray, err := enrol.Register(ctx, coordinatortest.RegisterRequest(2)) // matches no role, before and after
	if err != nil {
		t.Fatal(err)
	}
	waitMachine(ctx, t, admin, lost.Machine.ID, "told no roles are defined", func(m *shared.Machine) bool {
		return strings.Contains(m.Unmatched, "no roles are defined")
	})
	gossip := func(alive bool) {
		t.Helper()
		if _, err := c.Server.Apply(ctx, state.Gossip{ID: lost.Machine.ID, Alive: alive, Reason: "test: member failed",
			Time: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	gossip(false)
	list, err := shared.ParseRoles([]byte(roles))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ApplyRoles(ctx, list, false); err != nil {
		t.Fatal(err)
	}
	// The planner's pass over the new roles tells the stray machine why it does not match.
	waitMachine(ctx, t, admin, stray.Machine.ID, "re-evaluated under the new roles", func(m *shared.Machine) bool {
		return strings.Contains(m.Unmatched, "closest is role swarm-node")
	})
	m, err := admin.Machine(ctx, lost.Machine.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m.State != shared.StateLost || m.Unmatched != "" {
		t.Errorf("lost machine after the role change: state %s, reason %q; want lost and no stale reason", m.State, m.Unmatched)
	}
	gossip(true)
	waitMachine(ctx, t, admin, lost.Machine.ID, "planned once back from lost", func(m *shared.Machine) bool {
		return m.State == shared.StatePlanned && m.Role == "swarm-node"
	})
	// The operator's fix for the stray machine: its row in the import, with the missing label.
	if _, err := admin.ImportExpected(ctx, &shared.ImportRequest{Machines: []shared.ExpectedMachine{
		coordinatortest.Expected(2, map[string]string{"pool": "swarm"})}}); err != nil {
		t.Fatal(err)
	}
	waitMachine(ctx, t, admin, stray.Machine.ID, "planned once imported with the missing label", func(m *shared.Machine) bool {
		return m.State == shared.StatePlanned
	})
}

func waitMachine(ctx context.Context, t *testing.T, c *shared.Client, id shared.MachineID, what string, ok func(*shared.Machine) bool) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("machine %s %s", id, what), func() error {
		m, err := c.Machine(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !ok(m) {
			return fmt.Errorf("state %s, reason %q", m.State, m.Unmatched)
		}
		return nil
	})
}
