package agent

import (
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/agent/config"
	"github.com/rivetmetal/rivet/shared"
)

// TestDue is the pure decision of whether this mode's phase has steps to run.
func TestDue(t *testing.T) {
	plan := ramPlan(3, "wipe", "image")
	unmatched := "no role matches: closest is role worker, which wants min_cores 4 (has 2)" // as the planner words it
	steps := func(kv ...string) []shared.StepState {
		var out []shared.StepState
		for i := 0; i < len(kv); i += 2 {
			out = append(out, shared.StepState{Name: kv[i], Status: shared.StepStatus(kv[i+1])})
		}
		return out
	}
	cases := []struct {
		name    string
		mode    shared.AgentMode
		state   shared.State
		plan    *shared.Plan
		steps   []shared.StepState
		machine shared.MachineSummary
		due     bool
		note    string
	}{
		{"no plan", shared.ModeRAM, shared.StateDiscovered, nil, nil, shared.MachineSummary{}, false, "no plan yet"},
		{"no role", shared.ModeRAM, shared.StateDiscovered, nil, nil, shared.MachineSummary{Unmatched: unmatched}, false, "not planned: " + unmatched},
		{"fresh plan", shared.ModeRAM, shared.StatePlanned, plan, nil, shared.MachineSummary{}, true, ""},
		{"resume running", shared.ModeRAM, shared.StateProvisioning, plan, steps("wipe", "succeeded", "image", "running"), shared.MachineSummary{}, true, ""},
		{"failed step waits", shared.ModeRAM, shared.StateProvisioning, plan, steps("wipe", "failed"), shared.MachineSummary{}, false, "step wipe failed"},
		{"failed machine waits", shared.ModeRAM, shared.StateFailed, plan, nil, shared.MachineSummary{}, false, "operator"},
		{"installed never reinstalls", shared.ModeRAM, shared.StateInstalled, plan, nil, shared.MachineSummary{}, false, "not run again"},
		{"ram phase done", shared.ModeRAM, shared.StateProvisioning, plan, steps("wipe", "succeeded", "image", "skipped"), shared.MachineSummary{}, false, "all ram-phase steps done"},
		{"service runs swarm", shared.ModeService, shared.StateInstalled, plan, steps("wipe", "succeeded", "image", "succeeded"), shared.MachineSummary{}, true, ""},
		{"retired", shared.ModeService, shared.StateRetired, plan, nil, shared.MachineSummary{}, false, "retired"},
		{"service done", shared.ModeService, shared.StateReady, plan, steps("swarm", "succeeded"), shared.MachineSummary{}, false, "all disk-phase steps done"},
	}
	for _, c := range cases {
		a := New(config.Config{Mode: c.mode}, Deps{})
		a.state = c.state
		due, note := a.due(&shared.PlanView{State: c.state, Plan: c.plan, Steps: c.steps}, &c.machine)
		if due != c.due || !strings.Contains(note, c.note) {
			t.Errorf("%s: due=%v note=%q, want due=%v note containing %q", c.name, due, note, c.due, c.note)
		}
	}
}
