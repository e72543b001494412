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

// The swarm keeper is the leader's day-two chore: a retired machine leaves the swarm,
// and a manager lost for longer than a grace period is replaced: a ready worker (in a
// failure domain without a manager, when there is one) is promoted first, so the number
// of reachable managers comes back before the lost one is demoted and removed.
// The coordinator cannot reach any dockerd, so it records a swarm operation in Raft and
// names a ready manager to run it (shared/swarmop.go); that manager's agent demotes the
// node if it must, removes it and rotates the join tokens, so the retired OS cannot come
// back with a token it kept.

// SwarmKeeperOptions tune the swarm keeper.
type SwarmKeeperOptions struct {
	// LostGrace is how long a manager may be lost before it is replaced; 0: never.
	LostGrace time.Duration
	// DomainLabel is the failure-domain label (the rack) a replacement is spread by.
	DomainLabel string
}

// DefaultLostManagerGrace is --swarm-lost-manager-grace's default: long enough for a
// reboot or a short network outage, short enough that a second loss does not find the
// swarm one manager down.
const DefaultLostManagerGrace = 10 * time.Minute

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
	r := newReprovisioner()
	for {
		if s.store.Protocol() >= 2 { // the operations are protocol-2 commands
			now := time.Now().UTC()
			s.removeRetiredNodes(ctx, now)
			s.replaceLostManagers(ctx, now)
			s.reprovision(ctx, r, now)
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

func (s *Server) replaceLostManagers(ctx context.Context, now time.Time) {
	grace := s.keeper.LostGrace
	if grace <= 0 {
		return
	}
	lost := s.store.LostManagers()
	if len(lost) == 0 {
		return
	}
	pending := map[shared.MachineID]shared.SwarmOp{} // by the lost manager it is about
	for _, op := range s.store.SwarmOps() {
		if op.For != "" {
			pending[op.For] = op
		} else {
			pending[op.Target] = op
		}
	}
	managers := s.store.ReadyManagers()
	for _, l := range lost {
		have, busy := pending[l.ID]
		if now.Sub(l.Since) < grace || (busy && now.Sub(have.Created) < opStall) {
			continue
		}
		runner := pickRunner(managers, l.ID, have.Runner)
		if runner == "" {
			s.log.Warn("no ready manager to replace a lost manager", "machine", l.ID)
			continue
		}
		op := shared.SwarmOp{Kind: shared.SwarmOpRemove, Target: l.ID, NodeID: l.NodeID, Runner: runner,
			Reason: "manager lost for " + now.Sub(l.Since).Round(time.Second).String() + ", replaced by " + string(l.By)}
		if l.By == "" {
			w, ok := pickReplacement(s.store.PromotionCandidates(), s.managerDomains(l.ID), s.keeper.DomainLabel)
			if !ok {
				s.log.Warn("no ready worker to promote in place of a lost manager", "machine", l.ID)
				continue
			}
			op = shared.SwarmOp{Kind: shared.SwarmOpPromote, Target: w.ID, NodeID: s.swarmNode(w.ID), For: l.ID, Runner: runner,
				Reason: "in place of manager " + string(l.ID) + ", lost for " + now.Sub(l.Since).Round(time.Second).String()}
		}
		if _, err := s.Apply(ctx, state.SwarmOpStart{Time: now, Replaces: have.ID, Op: op}); err != nil {
			if !errors.Is(err, context.Canceled) {
				s.log.Warn("starting a swarm operation for a lost manager failed", "machine", l.ID, "kind", op.Kind, "err", err)
			}
			continue
		}
		s.log.Info("swarm operation for a lost manager started", "lost", l.ID, "kind", op.Kind, "target", op.Target, "runner", runner)
		s.Nudge(runner)
	}
}

// managerDomains counts the managers other than the lost one by failure domain.
func (s *Server) managerDomains(except shared.MachineID) map[string]int {
	out := map[string]int{}
	for _, id := range s.store.ReadyManagers() {
		if m, ok := s.store.Machine(id); ok && id != except {
			out[m.Labels[s.keeper.DomainLabel]]++
		}
	}
	return out
}

func (s *Server) swarmNode(id shared.MachineID) string {
	m, _ := s.store.Machine(id)
	if m == nil {
		return ""
	}
	return m.SwarmNodeID
}

// pickReplacement chooses the worker to promote: one in a failure domain that has no
// manager if there is one, else in the domain with the fewest; ties by id.
func pickReplacement(workers []shared.MachineSummary, managers map[string]int, label string) (shared.MachineSummary, bool) {
	best, found := shared.MachineSummary{}, false
	for _, w := range workers {
		if !found || managers[w.Labels[label]] < managers[best.Labels[label]] {
			best, found = w, true
		}
	}
	return best, found
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
