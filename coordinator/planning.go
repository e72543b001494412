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
	if s.store.CountByState()[shared.StateDiscovered] == 0 {
		return
	}
	machines := s.store.MachinesFull()
	if !settled(machines, opts, time.Now()) {
		return
	}
	roles := s.store.Roles()
	byID := make(map[shared.MachineID]*shared.Machine, len(machines))
	for _, m := range machines {
		byID[m.ID] = m
	}
	byName := map[string]*shared.Role{}
	for i := range roles {
		byName[roles[i].Name] = &roles[i]
	}
	for _, match := range planner.DryRun(roles, machines, opts.Placement) {
		if ctx.Err() != nil {
			return
		}
		cmd := s.planCommand(byID[match.MachineID], match, byName)
		if cmd.Plan == nil && cmd.Unmatched == byID[match.MachineID].Unmatched {
			continue // nothing new to say
		}
		if res, err := s.Apply(ctx, cmd); err != nil || res.Err != nil {
			s.log.Warn("planning a machine failed", "machine", match.MachineID, "err", firstErr(err, res.Err))
		} else if cmd.Plan != nil {
			s.log.Info("machine planned", "machine", match.MachineID, "role", cmd.Role, "swarm", match.Swarm)
			s.Nudge(match.MachineID)
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
	plan, err := planner.Plan(m, roles[match.Role], s.store.Applied()+1, match.Swarm)
	if err != nil {
		cmd.Unmatched = fmt.Sprintf("role %s matches but cannot be planned: %v", match.Role, err)
		return cmd
	}
	cmd.Role, cmd.Plan = match.Role, plan
	return cmd
}

func firstErr(err error, apiErr *shared.APIError) error {
	if err != nil {
		return err
	}
	return apiErr
}

// dryRunner answers the API's dry runs with the same placement options as planning.
type dryRunner struct{ opts planner.PlacementOptions }

func (d dryRunner) DryRun(roles []shared.Role, machines []*shared.Machine) []shared.RoleMatch {
	return planner.DryRun(roles, machines, d.opts)
}

// settled reports whether discovery has been quiet for opts.Settle, or the oldest
// discovered machine has waited opts.MaxWait.
func settled(machines []*shared.Machine, opts PlanOptions, now time.Time) bool {
	var newest, oldest time.Time
	for _, m := range machines {
		if m.State != shared.StateDiscovered || m.Unmatched != "" {
			continue
		}
		if m.CreatedAt.After(newest) {
			newest = m.CreatedAt
		}
		if oldest.IsZero() || m.CreatedAt.Before(oldest) {
			oldest = m.CreatedAt
		}
	}
	if newest.IsZero() {
		return true // only machines already told why they are unmatched: re-check them
	}
	return now.Sub(newest) >= opts.Settle || (opts.MaxWait > 0 && now.Sub(oldest) >= opts.MaxWait)
}
