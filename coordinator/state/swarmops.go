package state

import (
	"fmt"
	"maps"
	"slices"
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
// ready manager that is not the target; one operation per target at a time.
func (s *Store) ApplySwarmOpStart(c SwarmOpStart, index uint64) (Result, error) {
	return s.mutate(index, c.Op.Target, func() (Result, error) {
		op := c.Op
		refuse := func(format string, args ...any) (Result, error) {
			return Result{}, reject(KindConflict, RuleSwarmOp, string(op.Target), "swarm %s of %s: "+format,
				append([]any{op.Kind, op.Target}, args...)...)
		}
		if op.Kind != shared.SwarmOpRemove {
			return refuse("unknown operation")
		}
		target, ok := s.data.Machines[op.Target]
		switch {
		case !ok:
			return refuse("no such machine")
		case target.SwarmNodeID == "" || target.SwarmNodeID != op.NodeID:
			return refuse("its swarm node is %q, not %q", target.SwarmNodeID, op.NodeID)
		case op.Runner == op.Target:
			return refuse("a node does not remove itself")
		}
		runner, ok := s.data.Machines[op.Runner]
		if !ok || runner.State != shared.StateReady || s.liveManagers()[op.Runner] == "" {
			return refuse("runner %s is not a ready manager", op.Runner)
		}
		for i, have := range s.data.Swarm.Ops {
			if have.Target != op.Target {
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

// ApplySwarmOpDone takes the runner's report: on success the node is no longer in the
// swarm (and no longer a manager), and the rotated tokens replace the old ones.
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
		s.data.Swarm.Ops = slices.Delete(s.data.Swarm.Ops, at, at+1)
		if !c.Report.OK {
			s.event(index, c.Time, op.Target, shared.EventSwarm, fmt.Sprintf("swarm: %s could not %s this node: %s",
				op.Runner, op.Kind, c.Report.Error))
			return Result{}, nil
		}
		sw := &s.data.Swarm
		if m, ok := s.data.Machines[op.Target]; ok && m.SwarmNodeID == op.NodeID {
			m.SwarmNodeID = ""
			m.UpdatedAt = c.Time
		}
		delete(sw.Managers, op.Target)
		sw.ManagerAddrs = slices.Sorted(maps.Values(sw.Managers))
		if c.Report.ManagerToken != "" && c.Report.WorkerToken != "" {
			sw.ManagerToken, sw.WorkerToken, sw.ManagerTokenOut = c.Report.ManagerToken, c.Report.WorkerToken, false
			s.openSecrets()
		}
		s.event(index, c.Time, op.Target, shared.EventSwarm, fmt.Sprintf("swarm: %s removed node %s from the swarm: %s",
			op.Runner, op.NodeID, c.Report.Detail))
		return Result{}, nil
	})
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
