package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// The reprovisioner is the swarm keeper's part that moves re-provisionings along
// (shared/reprovision.go): for each machine it starts the swarm operation its phase
// needs — drain, the promotion of a stand-in for a manager, the removal — and the store
// moves the phase on when the operation's runner reports success. Planning again is the
// planner's ordinary pass once the machine has left the swarm.

// opRetry is how long after starting an operation on a machine the reprovisioner waits
// before it starts another on it (the last one failed, or stalled): a failing dockerd
// is asked again, not hammered.
const opRetry = 30 * time.Second

// reprovisioner remembers, between the keeper's passes, when it last started an
// operation per machine and phase, and what it last warned of.
type reprovisioner struct {
	started map[phaseOf]time.Time
	warned  map[shared.MachineID]string
}

type phaseOf struct {
	id    shared.MachineID
	phase shared.ReprovisionPhase
}

func newReprovisioner() *reprovisioner {
	return &reprovisioner{started: map[phaseOf]time.Time{}, warned: map[shared.MachineID]string{}}
}

func (s *Server) reprovision(ctx context.Context, r *reprovisioner, now time.Time) {
	pending := map[shared.MachineID]shared.SwarmOp{} // by the machine it is about
	for _, op := range s.store.SwarmOps() {
		pending[op.Target] = op
		if op.For != "" {
			pending[op.For] = op
		}
	}
	current := s.store.Reprovisionings()
	r.forgetEnded(current)
	for _, rp := range current {
		have, busy := pending[rp.ID]
		key := phaseOf{rp.ID, rp.Phase}
		if busy && now.Sub(have.Created) < opStall || now.Sub(r.started[key]) < opRetry {
			continue
		}
		if rp.Phase == shared.ReprovisionReinstall { // re-imaged through its BMC
			r.started[key] = now
			go s.cycleForImage(ctx, rp.ID)
			continue
		}
		op, why := s.reprovisionOp(rp, have.Runner)
		if op == nil {
			if r.warned[rp.ID] != why {
				s.log.Warn("re-provisioning waits", "machine", rp.ID, "phase", rp.Phase, "why", why)
				r.warned[rp.ID] = why
			}
			continue
		}
		delete(r.warned, rp.ID)
		r.started[key] = now
		op.Reason = "re-provisioning: " + string(rp.Phase)
		if _, err := s.Apply(ctx, state.SwarmOpStart{Time: now, Replaces: have.ID, Op: *op}); err != nil {
			if !errors.Is(err, context.Canceled) {
				s.log.Warn("starting a re-provisioning's swarm operation failed", "machine", rp.ID, "kind", op.Kind, "err", err)
			}
			continue
		}
		s.log.Info("re-provisioning swarm operation started", "machine", rp.ID, "phase", rp.Phase,
			"kind", op.Kind, "target", op.Target, "runner", op.Runner)
		s.Nudge(op.Runner)
	}
}

// reprovisionOp is the operation rp's phase needs, or nil and why it must wait.
func (s *Server) reprovisionOp(rp state.Reprovisioning, stalled shared.MachineID) (*shared.SwarmOp, string) {
	target := rp.ID
	if rp.Phase == shared.ReprovisionRestore {
		target = rp.StandIn
	}
	runner := pickRunner(s.store.ReadyManagers(), target, stalled)
	if runner == "" {
		return nil, "no other ready manager to run its swarm operations"
	}
	switch rp.Phase {
	case shared.ReprovisionDrain:
		return &shared.SwarmOp{Kind: shared.SwarmOpDrain, Target: rp.ID, NodeID: rp.NodeID, Runner: runner}, ""
	case shared.ReprovisionReplace:
		w, ok := pickReplacement(s.store.PromotionCandidates(), s.managerDomains(rp.ID), s.keeper.DomainLabel)
		if !ok {
			return nil, "it is a manager and no ready worker can be promoted in its place: add a machine to the swarm, or retire this one"
		}
		return &shared.SwarmOp{Kind: shared.SwarmOpPromote, Target: w.ID, NodeID: s.swarmNode(w.ID), For: rp.ID, Runner: runner}, ""
	case shared.ReprovisionLeave:
		return &shared.SwarmOp{Kind: shared.SwarmOpRemove, Target: rp.ID, NodeID: rp.NodeID, Runner: runner}, ""
	case shared.ReprovisionRestore:
		return &shared.SwarmOp{Kind: shared.SwarmOpDemote, Target: rp.StandIn, NodeID: s.swarmNode(rp.StandIn), For: rp.ID, Runner: runner}, ""
	}
	return nil, "phase " + string(rp.Phase) + " needs no swarm operation"
}

// forgetEnded drops what the reprovisioner remembers of phases no longer current.
func (r *reprovisioner) forgetEnded(current []state.Reprovisioning) {
	now := map[phaseOf]bool{}
	ids := map[shared.MachineID]bool{}
	for _, rp := range current {
		now[phaseOf{rp.ID, rp.Phase}], ids[rp.ID] = true, true
	}
	for k := range r.started {
		if !now[k] {
			delete(r.started, k)
		}
	}
	for id := range r.warned {
		if !ids[id] {
			delete(r.warned, id)
		}
	}
}

// cycleForImage power-cycles a re-imaged machine with PXE once through its BMC, so it
// network-boots the agent for its new image. The command's record (in the log) ends the
// wait, on every coordinator.
func (s *Server) cycleForImage(ctx context.Context, id shared.MachineID) {
	if s.power == nil {
		s.log.Warn("re-imaging through the BMC: this coordinator has no power manager", "machine", id)
		return
	}
	out, err := s.power.Run(ctx, string(id), shared.PowerRequest{Action: shared.PowerCycle, PXEOnce: true}, "re-provisioning")
	if err == nil && out.Error != "" {
		err = errors.New(out.Error)
	}
	if err != nil {
		s.log.Warn("re-imaging through the BMC: the power cycle failed; trying again", "machine", id, "err", err)
		return
	}
	s.log.Info("re-imaging through the BMC: power-cycled with PXE once", "machine", id)
}
