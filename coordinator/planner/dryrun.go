package planner

import (
	"sort"

	"github.com/rivetmetal/rivet/shared"
)

// DryRun says what planning would do with every discovered machine under roles: the role
// it matches (or the problem) and its swarm part, with managers placed over the whole
// fleet as Place would. Nothing changes; machines in other states only count towards the
// placement. The answer is sorted by machine id.
func DryRun(roles []shared.Role, machines []*shared.Machine, opts PlacementOptions) []shared.RoleMatch {
	byRole := map[string]*shared.Role{}
	for i := range roles {
		byRole[roles[i].Name] = &roles[i]
	}
	var out []shared.RoleMatch
	var fleet []Candidate
	for _, m := range machines {
		switch m.State {
		case shared.StateRetired:
			continue
		case shared.StateDiscovered:
			if !m.Admitted() {
				out = append(out, shared.RoleMatch{MachineID: m.ID, Problem: shared.NotAdmitted(m.ID)})
				continue
			}
			role, problem := Match(roles, m)
			rm := shared.RoleMatch{MachineID: m.ID, Problem: problem}
			if role != nil {
				rm.Role = role.Name
				fleet = append(fleet, CandidateOf(m, role))
			}
			out = append(out, rm)
		default:
			if role := byRole[m.Role]; role != nil {
				fleet = append(fleet, CandidateOf(m, role))
			}
		}
	}
	placement := Place(fleet, opts)
	for i := range out {
		rm := &out[i]
		if rm.Role == "" {
			continue
		}
		rm.Swarm = shared.SwarmNone
		if r, ok := placement.Roles[rm.MachineID]; ok {
			rm.Swarm = r
		}
		rm.SwarmInit = placement.NewInitiator && rm.MachineID == placement.Initiator
	}
	sort.Slice(out, func(a, b int) bool { return out[a].MachineID < out[b].MachineID })
	return out
}

// CandidateOf describes machine m, given the role it has or matched, for Place. Its
// current plan's swarm step, if any, is its placed swarm role (and says whether it
// creates the swarm); a manager being re-provisioned is placed as a manager.
func CandidateOf(m *shared.Machine, role *shared.Role) Candidate {
	c := Candidate{ID: m.ID, Labels: m.Labels, Swarm: role.Swarm.Role, Joined: m.SwarmNodeID != ""}
	if m.Plan != nil && m.Plan.Role == role.Name {
		for _, s := range m.Plan.Steps {
			if s.Kind == shared.StepSwarm && s.Swarm != nil {
				c.Placed, c.Init = s.Swarm.Role, s.Swarm.Init
			}
		}
	}
	if r := m.Reprovision; r != nil && r.Manager && m.Plan == nil {
		// A manager re-provisioned comes back as one; its stand-in is demoted after.
		c.Placed = shared.SwarmManager
	}
	return c
}
