package coordinator

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// The swarm keeper is the leader's day-two chore: a retired machine leaves the swarm.
// The coordinator cannot reach any dockerd, so it records a swarm operation in Raft and
// names a ready manager to run it (shared/swarmop.go); that manager's agent demotes the
// node if it must, removes it and rotates the join tokens, so the retired OS cannot come
// back with a token it kept.

const (
	keeperInterval = 2 * time.Second
	// opStall is how long an operation may stay unreported before another manager is
	// asked to run it: its runner may have died with it.
	opStall = 2 * time.Minute
)

// keepSwarm runs while this node leads.
func (s *Server) keepSwarm(ctx context.Context) {
	tick := time.NewTicker(keeperInterval)
	defer tick.Stop()
	for {
		if s.store.Protocol() >= 2 { // the operations are protocol-2 commands
			s.removeRetiredNodes(ctx, time.Now().UTC())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *Server) removeRetiredNodes(ctx context.Context, now time.Time) {
	leavers := s.store.SwarmLeavers()
	if len(leavers) == 0 {
		return
	}
	pending := map[shared.MachineID]shared.SwarmOp{}
	for _, op := range s.store.SwarmOps() {
		pending[op.Target] = op
	}
	managers := s.store.ReadyManagers()
	for _, target := range slices.Sorted(maps.Keys(leavers)) {
		have, busy := pending[target]
		if busy && now.Sub(have.Created) < opStall {
			continue
		}
		runner := pickRunner(managers, target, have.Runner)
		if runner == "" {
			s.log.Warn("no ready manager to remove a retired machine from the swarm", "machine", target)
			continue
		}
		cmd := state.SwarmOpStart{Time: now, Replaces: have.ID, Op: shared.SwarmOp{Kind: shared.SwarmOpRemove,
			Target: target, NodeID: leavers[target], Runner: runner, Reason: "the machine was retired"}}
		if _, err := s.Apply(ctx, cmd); err != nil {
			if !errors.Is(err, context.Canceled) {
				s.log.Warn("starting a swarm removal failed", "machine", target, "err", err)
			}
			continue
		}
		s.log.Info("swarm removal started", "machine", target, "node", leavers[target], "runner", runner, "replaces", have.ID)
		s.Nudge(runner)
	}
}

// pickRunner chooses the manager to run an operation on target: not the target, and not
// the runner that let the last attempt stall when another one is there.
func pickRunner(managers []shared.MachineID, target, stalled shared.MachineID) shared.MachineID {
	var fallback shared.MachineID
	for _, m := range managers {
		if m == target {
			continue
		}
		if m != stalled {
			return m
		}
		fallback = m
	}
	return fallback
}
