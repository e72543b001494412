package state

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/seal"
	"github.com/rivetmetal/rivet/shared"
)

// Swarm operations (shared/swarmop.go): the leader starts one, naming a ready manager to
// run it; that manager's agent reports how it went. Both commands are of protocol 2.

func (SwarmOpStart) command() {}
func (SwarmOpDone) command()  {}

// SwarmOpStart records a new operation; its id is the index it is applied at.
type SwarmOpStart struct {
	Op   shared.SwarmOp `json:"op"`
	Time time.Time      `json:"time"`
	// Replaces is the id of a stalled operation on the same target this one takes over
	// (its runner stopped answering); 0 when there is none.
	Replaces uint64 `json:"replaces,omitempty"`
}

// SwarmOpDone is the runner's report of an operation. Its tokens are sealed.
type SwarmOpDone struct {
	ID     uint64               `json:"id"`
	Runner shared.MachineID     `json:"runner"`
	Time   time.Time            `json:"time"`
	Report shared.SwarmOpReport `json:"report"`
}

// RuleSwarmOp: the operation cannot start or be reported as asked.
const RuleSwarmOp Rule = "swarm_op"

// SwarmOps returns the pending operations, oldest first.
func (s *Store) SwarmOps() []shared.SwarmOp {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.data.Swarm.Ops)
}

// SwarmOpsFor returns the pending operations machine id runs.
func (s *Store) SwarmOpsFor(id shared.MachineID) []shared.SwarmOp {
	out := []shared.SwarmOp{}
	for _, op := range s.SwarmOps() {
		if op.Runner == id {
			out = append(out, op)
		}
	}
	return out
}

// ApplySwarmOpStart records an operation if its target is a swarm node and its runner a
// ready manager that is not the target; one operation per target at a time. A removal
// is of a retired, lost or re-provisioned (leaving) machine; a drain of one being
// re-provisioned; a promotion makes a ready worker stand in for a lost manager, or for
// one being re-provisioned, not replaced yet.
func (s *Store) ApplySwarmOpStart(c SwarmOpStart, index uint64) (Result, error) {
	return s.mutate(index, c.Op.Target, func() (Result, error) {
		op := c.Op
		refuse := func(format string, args ...any) (Result, error) {
			return Result{}, reject(KindConflict, RuleSwarmOp, string(op.Target), "swarm %s of %s: "+format,
				append([]any{op.Kind, op.Target}, args...)...)
		}
		target, ok := s.data.Machines[op.Target]
		live := s.liveManagers()
		switch {
		case !ok:
			return refuse("no such machine")
		case target.SwarmNodeID == "" || target.SwarmNodeID != op.NodeID:
			return refuse("its swarm node is %q, not %q", target.SwarmNodeID, op.NodeID)
		case op.Runner == op.Target:
			return refuse("a node does not run an operation on itself")
		}
		switch op.Kind {
		case shared.SwarmOpRemove:
			_, leaving := s.reprovisioning(op.Target, shared.ReprovisionLeave)
			if target.State != shared.StateRetired && target.State != shared.StateLost && !leaving {
				return refuse("it is %s: only a retired, lost or re-provisioned machine leaves the swarm", target.State)
			}
		case shared.SwarmOpDrain:
			if _, ok := s.reprovisioning(op.Target, shared.ReprovisionDrain); !ok {
				return refuse("it is not being re-provisioned (or is past draining)")
			}
		case shared.SwarmOpDemote:
			back, ok := s.reprovisioning(op.For, shared.ReprovisionRestore)
			if !ok || back.Reprovision.StandIn != op.Target || live[op.Target] == "" {
				return refuse("it is not the manager standing in for %s, back from re-provisioning", op.For)
			}
		case shared.SwarmOpPromote:
			stoodIn, ok := s.data.Machines[op.For]
			_, replacing := s.reprovisioning(op.For, shared.ReprovisionReplace)
			switch {
			case target.State != shared.StateReady || live[op.Target] != "" || target.Reprovision != nil:
				return refuse("it is not a ready worker")
			case !ok || live[op.For] == "" || stoodIn.State != shared.StateLost && !replacing:
				return refuse("%s is neither a lost manager nor one being re-provisioned", op.For)
			case s.data.Swarm.Replaced[op.For] != "":
				return refuse("lost manager %s is already replaced by %s", op.For, s.data.Swarm.Replaced[op.For])
			}
		default:
			return refuse("unknown operation")
		}
		runner, ok := s.data.Machines[op.Runner]
		if !ok || runner.State != shared.StateReady || live[op.Runner] == "" {
			return refuse("runner %s is not a ready manager", op.Runner)
		}
		for i, have := range s.data.Swarm.Ops {
			if have.Target != op.Target && (op.For == "" || have.For != op.For) {
				continue
			}
			if have.ID != c.Replaces {
				return refuse("operation %d on it is still pending", have.ID)
			}
			s.data.Swarm.Ops = slices.Delete(s.data.Swarm.Ops, i, i+1)
			break
		}
		op.ID, op.Created = index, c.Time
		s.data.Swarm.Ops = append(s.data.Swarm.Ops, op)
		s.event(index, c.Time, op.Target, shared.EventSwarm, fmt.Sprintf("swarm: manager %s asked to %s this node (%s): %s",
			op.Runner, op.Kind, op.NodeID, op.Reason))
		return Result{Value: fmt.Sprint(index)}, nil
	})
}

// ApplySwarmOpDone takes the runner's report. A removed node is no longer in the swarm
// (nor a manager) and the rotated tokens replace the old ones; a promoted node is a
// manager from now on, its plan says so, and it stands in for the lost manager.
func (s *Store) ApplySwarmOpDone(c SwarmOpDone, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		at := slices.IndexFunc(s.data.Swarm.Ops, func(op shared.SwarmOp) bool { return op.ID == c.ID })
		if at < 0 {
			return Result{}, reject(KindNotFound, RuleSwarmOp, string(c.Runner), "no pending swarm operation %d", c.ID)
		}
		op := s.data.Swarm.Ops[at]
		if op.Runner != c.Runner {
			return Result{}, reject(KindForbidden, RuleSwarmOp, string(c.Runner),
				"swarm operation %d is %s's to report, not %s's", c.ID, op.Runner, c.Runner)
		}
		if c.Report.OK && op.Kind == shared.SwarmOpPromote && c.Report.ManagerAddr == "" {
			return Result{}, reject(KindInvalid, RuleSwarmOp, string(c.Runner), "a promotion's report needs the new manager's address")
		}
		s.data.Swarm.Ops = slices.Delete(s.data.Swarm.Ops, at, at+1)
		if !c.Report.OK {
			s.event(index, c.Time, op.Target, shared.EventSwarm, fmt.Sprintf("swarm: %s could not %s this node: %s",
				op.Runner, op.Kind, c.Report.Error))
			return Result{}, nil
		}
		switch op.Kind {
		case shared.SwarmOpPromote:
			s.recordPromotion(index, c, op)
			s.replaced(index, c.Time, op)
			return Result{}, nil
		case shared.SwarmOpDrain:
			s.event(index, c.Time, op.Target, shared.EventSwarm, fmt.Sprintf("swarm: %s drained this node: %s", op.Runner, c.Report.Detail))
			s.drained(index, c.Time, op, c.Report.Detail)
			return Result{}, nil
		case shared.SwarmOpDemote:
			s.restored(index, c.Time, op)
			return Result{}, nil
		}
		sw := &s.data.Swarm
		if m, ok := s.data.Machines[op.Target]; ok && m.SwarmNodeID == op.NodeID {
			m.SwarmNodeID = ""
			m.UpdatedAt = c.Time
		}
		delete(sw.Managers, op.Target)
		delete(sw.Replaced, op.Target)
		sw.ManagerAddrs = slices.Sorted(maps.Values(sw.Managers))
		if c.Report.ManagerToken != "" && c.Report.WorkerToken != "" {
			sw.ManagerToken, sw.WorkerToken, sw.ManagerTokenOut = c.Report.ManagerToken, c.Report.WorkerToken, false
			s.openSecrets()
		}
		s.event(index, c.Time, op.Target, shared.EventSwarm, fmt.Sprintf("swarm: %s removed node %s from the swarm: %s",
			op.Runner, op.NodeID, c.Report.Detail))
		s.left(index, c.Time, op)
		return Result{}, nil
	})
}

// recordPromotion makes the promoted machine a manager in the state: its address is a
// manager's, and its plan's swarm step says manager, so a later re-install joins it as
// one. It stands in for op.For, lost or being re-provisioned.
func (s *Store) recordPromotion(index uint64, c SwarmOpDone, op shared.SwarmOp) {
	sw := &s.data.Swarm
	if m, ok := s.data.Machines[op.Target]; ok && m.Plan != nil {
		m.Plan, m.UpdatedAt = withSwarmRole(m.Plan, shared.SwarmManager), c.Time
	}
	if sw.Managers == nil {
		sw.Managers = map[shared.MachineID]string{}
	}
	if sw.Replaced == nil {
		sw.Replaced = map[shared.MachineID]shared.MachineID{}
	}
	sw.Managers[op.Target] = c.Report.ManagerAddr
	sw.ManagerAddrs = slices.Sorted(maps.Values(sw.Managers))
	sw.Replaced[op.For] = op.Target
	s.event(index, c.Time, op.Target, shared.EventSwarm, fmt.Sprintf("swarm: %s promoted this node to manager (%s) in place of manager %s",
		op.Runner, c.Report.ManagerAddr, op.For))
	s.event(index, c.Time, op.For, shared.EventSwarm, fmt.Sprintf("swarm: %s promoted in place of this manager", op.Target))
}

// SealSwarmOpDone returns c with its tokens sealed.
func SealSwarmOpDone(k *seal.Key, c SwarmOpDone) SwarmOpDone {
	if c.Report.ManagerToken != "" {
		c.Report.ManagerToken = k.Seal(c.Report.ManagerToken)
	}
	if c.Report.WorkerToken != "" {
		c.Report.WorkerToken = k.Seal(c.Report.WorkerToken)
	}
	return c
}

// SwarmLeavers returns, by machine, the swarm node id of every retired machine that the
// swarm may still count as a node: the nodes to remove.
func (s *Store) SwarmLeavers() map[shared.MachineID]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[shared.MachineID]string{}
	for id, m := range s.data.Machines {
		if m.State == shared.StateRetired && m.SwarmNodeID != "" {
			out[id] = m.SwarmNodeID
		}
	}
	return out
}

// LostManager is a manager the swarm may still count that gossip says is gone.
type LostManager struct {
	ID     shared.MachineID
	NodeID string
	Since  time.Time        // its last change, which for a lost machine is its loss
	By     shared.MachineID // the worker promoted in its place, if any yet
}

// LostManagers returns the lost managers still in the swarm.
func (s *Store) LostManagers() []LostManager {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []LostManager
	for id := range s.liveManagers() {
		if m := s.data.Machines[id]; m.State == shared.StateLost && m.SwarmNodeID != "" {
			out = append(out, LostManager{ID: id, NodeID: m.SwarmNodeID, Since: m.UpdatedAt, By: s.data.Swarm.Replaced[id]})
		}
	}
	slices.SortFunc(out, func(a, b LostManager) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// PromotionCandidates returns the ready workers in the swarm with their labels: the
// machines a lost manager may be replaced by.
func (s *Store) PromotionCandidates() []shared.MachineSummary {
	s.mu.RLock()
	defer s.mu.RUnlock()
	live := s.liveManagers()
	var out []shared.MachineSummary
	for id, m := range s.data.Machines {
		if m.State == shared.StateReady && m.SwarmNodeID != "" && live[id] == "" {
			out = append(out, m.Summary())
		}
	}
	slices.SortFunc(out, func(a, b shared.MachineSummary) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// ReadyManagers returns the ready machines the swarm counts as managers, sorted: the
// machines that may run a swarm operation.
func (s *Store) ReadyManagers() []shared.MachineID {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []shared.MachineID
	for id := range s.liveManagers() {
		if m := s.data.Machines[id]; m.State == shared.StateReady {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// withSwarmRole returns a copy of plan whose swarm step has role: readers hold the old
// plan, so it is never changed in place.
func withSwarmRole(plan *shared.Plan, role string) *shared.Plan {
	p := *plan
	p.Steps = slices.Clone(p.Steps)
	for i := range p.Steps {
		if st := p.Steps[i].Swarm; st != nil {
			changed := *st
			changed.Role = role
			p.Steps[i].Swarm = &changed
		}
	}
	return &p
}
