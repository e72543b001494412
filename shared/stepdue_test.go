package shared

import (
	"strings"
	"testing"
)

// TestStepsDue covers every branch of the rule the agent and the fleet simulator share.
func TestStepsDue(t *testing.T) {
	plan := &Plan{Role: "worker", Generation: 3, Steps: []Step{
		{Name: "wipe", Kind: StepDisk, Phase: PhaseRAM},
		{Name: "image", Kind: StepImage, Phase: PhaseRAM},
		{Name: "swarm", Kind: StepSwarm, Phase: PhaseDisk},
	}}
	steps := func(kv ...string) []StepState {
		var out []StepState
		for i := 0; i < len(kv); i += 2 {
			out = append(out, StepState{Name: kv[i], Status: StepStatus(kv[i+1])})
		}
		return out
	}
	cases := []struct {
		name  string
		phase Phase
		state State
		plan  *Plan
		steps []StepState
		due   bool
		why   string
	}{
		{"no plan", PhaseRAM, StateDiscovered, nil, nil, false, "no plan yet (state discovered)"},
		{"fresh plan", PhaseRAM, StatePlanned, plan, nil, true, ""},
		{"resume running", PhaseRAM, StateProvisioning, plan, steps("wipe", "succeeded", "image", "running"), true, ""},
		{"skipped counts as done", PhaseRAM, StateProvisioning, plan, steps("wipe", "skipped"), true, ""},
		{"failed step waits", PhaseRAM, StateProvisioning, plan, steps("wipe", "failed"), false, "step wipe failed"},
		{"failed machine waits", PhaseDisk, StateFailed, plan, nil, false, "machine is failed"},
		{"retired", PhaseDisk, StateRetired, plan, nil, false, "machine is retired"},
		{"installed never reinstalls", PhaseRAM, StateInstalled, plan, nil, false, "RAM-phase steps are not run again"},
		{"joining never reinstalls", PhaseRAM, StateJoining, plan, nil, false, "not run again"},
		{"ready never reinstalls", PhaseRAM, StateReady, plan, nil, false, "not run again"},
		{"ram phase done", PhaseRAM, StateProvisioning, plan, steps("wipe", "succeeded", "image", "skipped"), false, "all ram-phase steps done (state provisioning)"},
		{"service runs swarm", PhaseDisk, StateInstalled, plan, steps("wipe", "succeeded", "image", "succeeded"), true, ""},
		{"service done", PhaseDisk, StateReady, plan, steps("swarm", "succeeded"), false, "all disk-phase steps done"},
		{"re-imaged: the installed agent waits", PhaseDisk, StatePlanned, plan, nil, false, "installs an image first"},
	}
	for _, c := range cases {
		due, why := StepsDue(&PlanView{State: c.state, Plan: c.plan, Steps: c.steps}, c.state, c.phase)
		if due != c.due || !strings.Contains(why, c.why) || (c.due && why != "") {
			t.Errorf("%s: StepsDue = %v, %q; want %v, %q", c.name, due, why, c.due, c.why)
		}
	}
}
