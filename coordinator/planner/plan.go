package planner

import (
	"fmt"

	"github.com/rivetmetal/rivet/shared"
)

// Step names in every plan. They are stable: reports, the agent's journal and the status
// pages refer to steps by name.
const (
	StepNameDisk    = "disk"
	StepNameImage   = "image"
	StepNameHandoff = "handoff"
	StepNameBootCfg = "bootcfg"
	StepNameReboot  = "reboot"
	StepNameSwarm   = "swarm"
)

// Plan builds machine m's plan for role: in RAM, wipe the install disk and lay out a GPT,
// write the image, make the next network boot fall through to the disk, reboot; then, on
// the installed OS, take its part in the Swarm. swarmRole is the placement's verdict
// (manager or worker) and is needed only when the role's swarm part is auto; a role with
// swarm none gets no swarm step. A role that installs nothing adopts the host as it is:
// its plan is the swarm step alone.
func Plan(m *shared.Machine, role *shared.Role, generation uint64, swarmRole string) (*shared.Plan, error) {
	if err := m.ID.Validate(); err != nil {
		return nil, err
	}
	if err := role.Validate(); err != nil {
		return nil, err
	}
	swarm, err := swarmPart(role, swarmRole)
	if err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.ID, err)
	}
	steps, err := installSteps(m, role)
	if err != nil {
		return nil, err
	}
	return finishPlan(m, role, generation, swarmStepFor(steps, swarm, m.Reprovision))
}

// PlanMatch builds machine m's plan for a dry run's verdict: its role, its placed swarm
// role, and whether it is the manager designated to create the swarm.
func PlanMatch(m *shared.Machine, role *shared.Role, generation uint64, match shared.RoleMatch) (*shared.Plan, error) {
	p, err := Plan(m, role, generation, match.Swarm)
	if err != nil || !match.SwarmInit {
		return p, err
	}
	var last *shared.Step
	if n := len(p.Steps); n > 0 {
		last = &p.Steps[n-1]
	}
	if last == nil || last.Kind != shared.StepSwarm || last.Swarm.Role != shared.SwarmManager {
		return nil, fmt.Errorf("machine %s is designated to create the swarm but its plan has no manager step (a planner bug)", m.ID)
	}
	last.Swarm.Init = true
	return p, nil
}

// installSteps are the RAM-phase steps that install the role's image; none for a role
// that adopts hosts already running their OS.
func installSteps(m *shared.Machine, role *shared.Role) ([]shared.Step, error) {
	if !role.Installs() {
		return nil, nil
	}
	target, err := InstallDisk(role.InstallDisk, m.Inventory)
	if err != nil {
		return nil, fmt.Errorf("machine %s, role %s: %w", m.ID, role.Name, err)
	}
	image := role.Image
	if r := m.Reprovision; r != nil && r.Image != nil {
		image = *r.Image // the operator's image for this re-provisioning
	}
	return []shared.Step{
		{Name: StepNameDisk, Kind: shared.StepDisk, Phase: shared.PhaseRAM,
			Disk: &shared.DiskStep{Target: target, GPT: true}},
		{Name: StepNameImage, Kind: shared.StepImage, Phase: shared.PhaseRAM,
			Image: &shared.ImageStep{Target: target, Image: image}},
		{Name: StepNameHandoff, Kind: shared.StepHandoff, Phase: shared.PhaseRAM,
			Handoff: &shared.HandoffStep{Target: target, RootLabel: image.Root(), Hostname: Hostname(m)}},
		{Name: StepNameBootCfg, Kind: shared.StepBootCfg, Phase: shared.PhaseRAM,
			BootCfg: &shared.BootCfgStep{Boot: shared.BootDisk}},
		{Name: StepNameReboot, Kind: shared.StepReboot, Phase: shared.PhaseRAM,
			Reboot: &shared.RebootStep{}},
	}, nil
}

// swarmStepFor appends the swarm step when the role has a swarm part. A machine
// re-provisioned in place (its OS kept) leaves the node it was first.
func swarmStepFor(steps []shared.Step, swarm string, r *shared.Reprovision) []shared.Step {
	if swarm != "" {
		// No advertise address: the installed OS may not keep the RAM agent's address. The
		// agent knows its own address when the step runs.
		st := &shared.SwarmStep{Role: swarm}
		if r != nil {
			st.LeaveNode = r.LeftNode
		}
		steps = append(steps, shared.Step{Name: StepNameSwarm, Kind: shared.StepSwarm, Phase: shared.PhaseDisk, Swarm: st})
	}
	return steps
}

func finishPlan(m *shared.Machine, role *shared.Role, generation uint64, steps []shared.Step) (*shared.Plan, error) {
	p := &shared.Plan{MachineID: m.ID, Role: role.Name, Generation: generation, Steps: steps}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("machine %s: planner built an invalid plan (a bug): %w", m.ID, err)
	}
	return p, nil
}

// swarmPart returns the swarm role of the plan's swarm step, "" for none.
func swarmPart(role *shared.Role, placed string) (string, error) {
	switch role.Swarm.Role {
	case shared.SwarmNone:
		return "", nil
	case shared.SwarmManager, shared.SwarmWorker:
		if placed != "" && placed != role.Swarm.Role {
			return "", fmt.Errorf("role %s is a swarm %s, but placement says %s", role.Name, role.Swarm.Role, placed)
		}
		return role.Swarm.Role, nil
	}
	if placed != shared.SwarmManager && placed != shared.SwarmWorker {
		return "", fmt.Errorf("role %s places swarm roles automatically: run PlaceManagers first (got %q)",
			role.Name, placed)
	}
	return placed, nil
}

// HostnameLabel is the machine label that names the installed OS's host.
const HostnameLabel = "hostname"

// Hostname is the host name the installed OS gets: the machine's hostname label when it
// is a valid one, else its machine id, which `rivet machines ls` lists beside it.
func Hostname(m *shared.Machine) string {
	if h := m.Labels[HostnameLabel]; shared.ValidateName("host", h) == nil {
		return h
	}
	return string(m.ID)
}
