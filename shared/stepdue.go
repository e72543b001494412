package shared

import "fmt"

// StepsDue is the agent's rule for whether a machine in state st has steps of phase to run
// now, and if not, why (a sentence for the agent's log and progress line). The agent and
// the fleet simulator both call it, so the simulator cannot drift from what agents do.
//
// A phase is due when the machine has a plan, is neither failed nor retired, and some step
// of the phase is neither succeeded nor skipped; a failed step stops the phase until an
// operator retries it, and RAM-phase steps never run again on a machine the record says
// is installed.
func StepsDue(view *PlanView, st State, phase Phase) (bool, string) {
	if view.Plan == nil {
		return false, fmt.Sprintf("no plan yet (state %s)", st)
	}
	switch {
	case st == StateRetired:
		return false, "machine is retired; waiting for an operator to release it"
	case st == StateFailed:
		return false, "machine is failed; waiting for an operator's retry or re-plan"
	case phase == PhaseRAM && (st == StateInstalled || st == StateJoining || st == StateReady):
		// Never run install steps on a machine the record says is installed.
		return false, fmt.Sprintf("machine is %s; RAM-phase steps are not run again", st)
	}
	recorded := map[string]StepStatus{}
	for _, s := range view.Steps {
		recorded[s.Name] = s.Status
	}
	if phase == PhaseDisk && (st == StatePlanned || st == StateProvisioning) && pending(view.Plan, recorded, PhaseRAM) {
		// A plan that installs an image first (a machine re-provisioned from its installed
		// OS): the disk phase waits for the RAM agent's steps and the new OS.
		return false, "the plan installs an image first: waiting for the machine to boot the Rivet agent"
	}
	for _, s := range view.Plan.Steps {
		if s.Phase != phase {
			continue
		}
		switch recorded[s.Name] {
		case StepSucceeded, StepSkipped:
			continue
		case StepFailed:
			return false, fmt.Sprintf("step %s failed; waiting for an operator's retry", s.Name)
		}
		return true, ""
	}
	return false, fmt.Sprintf("all %s-phase steps done (state %s)", phase, st)
}

// pending reports whether some step of phase is neither succeeded nor skipped.
func pending(p *Plan, recorded map[string]StepStatus, phase Phase) bool {
	for _, s := range p.Steps {
		if st := recorded[s.Name]; s.Phase == phase && st != StepSucceeded && st != StepSkipped {
			return true
		}
	}
	return false
}

// RAMStepsPending reports whether view's plan still has RAM-phase steps to run.
func RAMStepsPending(view *PlanView) bool {
	if view.Plan == nil {
		return false
	}
	recorded := map[string]StepStatus{}
	for _, s := range view.Steps {
		recorded[s.Name] = s.Status
	}
	return pending(view.Plan, recorded, PhaseRAM)
}
