package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/rivetmetal/rivet/coordinator/planner"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// PlanOptions tune the leader's planning pass.
type PlanOptions struct {
	Placement planner.PlacementOptions
	// Settle: plan only once no machine has been discovered for this long, so that a rack
	// powering on is planned as one fleet and managers spread over its failure domains.
	Settle time.Duration
	// MaxWait bounds Settle: a steady trickle of new machines cannot starve planning.
	MaxWait time.Duration
}

// PlanFleet is the leader's planning pass: every discovered machine gets a plan from the
// one role it matches, with Swarm managers placed over the whole fleet, or a visible
// reason why it has none (no role, or several). Nothing is guessed.
func (s *Server) PlanFleet(ctx context.Context, opts PlanOptions) {
	if !s.planDue(opts, time.Now()) {
		return
	}
	machines := s.store.MachinesFull()
	roles := s.store.Roles()
	byID := make(map[shared.MachineID]*shared.Machine, len(machines))
	for _, m := range machines {
		byID[m.ID] = m
	}
	byName := map[string]*shared.Role{}
	for i := range roles {
		byName[roles[i].Name] = &roles[i]
	}
	var batch state.SetPlans
	for _, match := range planner.DryRun(roles, machines, opts.Placement) {
		cmd := s.planCommand(byID[match.MachineID], match, byName)
		if cmd.Plan == nil && cmd.Unmatched == byID[match.MachineID].Unmatched {
			continue // nothing new to say
		}
		batch.Plans = append(batch.Plans, cmd)
	}
	for len(batch.Plans) > 0 && ctx.Err() == nil {
		// Chunks keep one log entry well under a megabyte.
		chunk := state.SetPlans{Plans: batch.Plans[:min(len(batch.Plans), 200)]}
		batch.Plans = batch.Plans[len(chunk.Plans):]
		if _, err := s.Apply(ctx, chunk); err != nil {
			s.log.Warn("recording a planning pass failed", "err", err)
			return
		}
		for _, cmd := range chunk.Plans {
			if cmd.Plan != nil {
				s.log.Info("machine planned", "machine", cmd.ID, "role", cmd.Role)
				s.Nudge(cmd.ID)
			}
		}
	}
}

func (s *Server) planCommand(m *shared.Machine, match shared.RoleMatch, roles map[string]*shared.Role) state.SetPlan {
	cmd := state.SetPlan{ID: m.ID, Time: time.Now().UTC()}
	if match.Role == "" {
		cmd.Unmatched = match.Problem
		return cmd
	}
	// The applied index grows with every write, so a new plan always has a newer
	// generation than any plan this machine had before.
	plan, err := planner.PlanMatch(m, roles[match.Role], s.store.Applied()+1, match)
	if err != nil {
		cmd.Unmatched = fmt.Sprintf("role %s matches but cannot be planned: %v", match.Role, err)
		return cmd
	}
	cmd.Role, cmd.Plan = match.Role, plan
	return cmd
}

// dryRunner answers the API's dry runs with the same placement options as planning.
type dryRunner struct{ opts planner.PlacementOptions }

func (d dryRunner) DryRun(roles []shared.Role, machines []*shared.Machine) []shared.RoleMatch {
	return planner.DryRun(roles, machines, d.opts)
}

// planDue decides cheaply, without copying machines, whether a planning pass is due:
// new machines whose discovery has been quiet for opts.Settle (or waited opts.MaxWait),
// or unmatched machines after a role changed. Machines already told why no role matches
// are not re-planned on every tick.
func (s *Server) planDue(opts PlanOptions, now time.Time) bool {
	d := s.store.Discovery()
	rolesVersion := s.store.RolesVersion()
	rolesChanged := rolesVersion != s.plannedRoles.Load()
	if d.Waiting == 0 && !(rolesChanged && d.Unmatched > 0) {
		return false
	}
	if d.Waiting > 0 && now.Sub(d.Newest) < opts.Settle && (opts.MaxWait == 0 || now.Sub(d.Oldest) < opts.MaxWait) {
		return false
	}
	s.plannedRoles.Store(rolesVersion)
	return true
}
