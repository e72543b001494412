package swarm

import (
	"context"
	"errors"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/swarm"

	"github.com/rivetmetal/rivet/shared"
)

// RunOp carries out one day-two operation through this manager's dockerd and says how
// it went. It is idempotent: a node already gone counts as removed, a drained node is not
// surged twice, so a report lost on the way is simply run again.
func (e *Executor) RunOp(ctx context.Context, op shared.SwarmOp) shared.SwarmOpReport {
	ctx, cancel := context.WithTimeout(ctx, 3*e.cfg.Wait)
	defer cancel()
	r, err := e.runOp(ctx, op)
	log := e.log.With("op", op.ID, "kind", op.Kind, "target", op.Target, "node", op.NodeID, "detail", r.Detail)
	if err != nil {
		log.Warn("swarm operation failed", "err", err)
		r.OK, r.Error = false, err.Error()
		return r
	}
	log.Info("swarm operation done")
	r.OK = true
	return r
}

func (e *Executor) runOp(ctx context.Context, op shared.SwarmOp) (shared.SwarmOpReport, error) {
	switch op.Kind {
	case shared.SwarmOpRemove:
		done, tokens, err := e.removeNode(ctx, op.NodeID)
		return shared.SwarmOpReport{Detail: strings.Join(done, ", "), ManagerToken: tokens.Manager, WorkerToken: tokens.Worker}, err
	case shared.SwarmOpDrain:
		detail, err := e.drain(ctx, op.NodeID)
		return shared.SwarmOpReport{Detail: detail}, err
	case shared.SwarmOpDemote:
		node, _, err := e.docker.NodeInspectWithRaw(ctx, op.NodeID)
		if err != nil {
			return shared.SwarmOpReport{}, dockerErr("reading node "+op.NodeID, err, nil)
		}
		if err := e.demote(ctx, node); err != nil {
			return shared.SwarmOpReport{}, err
		}
		return shared.SwarmOpReport{Detail: "demoted"}, nil
	case shared.SwarmOpPromote:
		addr, err := e.promote(ctx, op.NodeID)
		if err != nil {
			return shared.SwarmOpReport{}, err
		}
		return shared.SwarmOpReport{Detail: "promoted, reachable at " + addr, ManagerAddr: addr}, nil
	}
	return shared.SwarmOpReport{}, fmt.Errorf("this agent does not know swarm operation %q: upgrade it", op.Kind)
}

// removeNode takes a node out of the swarm for good: demote it if it is a manager (a
// manager cannot be removed), remove it, and rotate both join tokens, which the node may
// have seen. It returns what it did, and the new tokens.
func (e *Executor) removeNode(ctx context.Context, nodeID string) ([]string, swarm.JoinTokens, error) {
	var done []string
	node, _, err := e.docker.NodeInspectWithRaw(ctx, nodeID)
	switch {
	case cerrdefs.IsNotFound(err):
		done = append(done, "node already gone")
	case err != nil:
		return done, swarm.JoinTokens{}, dockerErr("reading node "+nodeID, err, nil)
	default:
		if node.Spec.Role == swarm.NodeRoleManager {
			if err := e.demote(ctx, node); err != nil {
				return done, swarm.JoinTokens{}, err
			}
			done = append(done, "demoted")
		}
		if err := e.docker.NodeRemove(ctx, nodeID, swarm.NodeRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return done, swarm.JoinTokens{}, dockerErr("removing node "+nodeID, err, nil)
		}
		done = append(done, "removed")
	}
	tokens, err := e.rotateJoinTokens(ctx)
	if err != nil {
		return done, swarm.JoinTokens{}, err
	}
	return append(done, "join tokens rotated"), tokens, nil
}

// demote makes a manager a worker and waits until the swarm no longer counts it as one.
func (e *Executor) demote(ctx context.Context, node swarm.Node) error {
	spec := node.Spec
	spec.Role = swarm.NodeRoleWorker
	if err := e.docker.NodeUpdate(ctx, node.ID, node.Version, spec); err != nil {
		return dockerErr("demoting manager "+node.ID, err, nil)
	}
	err := poll(ctx, e.cfg.Wait, func() (bool, error) {
		n, _, err := e.docker.NodeInspectWithRaw(ctx, node.ID)
		if cerrdefs.IsNotFound(err) {
			return true, nil
		}
		return err == nil && n.ManagerStatus == nil, err
	})
	if err != nil {
		return fmt.Errorf("waiting for manager %s to be demoted: %w", node.ID, err)
	}
	return nil
}

// promote makes a worker a manager and waits until the swarm counts it as a reachable
// one; it returns its manager address.
func (e *Executor) promote(ctx context.Context, nodeID string) (string, error) {
	node, _, err := e.docker.NodeInspectWithRaw(ctx, nodeID)
	if err != nil {
		return "", dockerErr("reading node "+nodeID, err, nil)
	}
	if node.Spec.Role != swarm.NodeRoleManager {
		spec := node.Spec
		spec.Role = swarm.NodeRoleManager
		if err := e.docker.NodeUpdate(ctx, nodeID, node.Version, spec); err != nil {
			return "", dockerErr("promoting node "+nodeID, err, nil)
		}
	}
	var addr string
	err = poll(ctx, e.cfg.Wait, func() (bool, error) {
		n, _, err := e.docker.NodeInspectWithRaw(ctx, nodeID)
		if err != nil {
			return false, err
		}
		if ms := n.ManagerStatus; ms != nil && ms.Reachability == swarm.ReachabilityReachable {
			addr = ms.Addr
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return "", fmt.Errorf("waiting for node %s to be a reachable manager: %w", nodeID, err)
	}
	return addr, nil
}

// rotateJoinTokens makes the swarm issue new worker and manager join tokens.
func (e *Executor) rotateJoinTokens(ctx context.Context) (swarm.JoinTokens, error) {
	sw, err := e.docker.SwarmInspect(ctx)
	if err != nil {
		return swarm.JoinTokens{}, dockerErr("reading the swarm before rotating its join tokens", err, nil)
	}
	secrets := []string{sw.JoinTokens.Manager, sw.JoinTokens.Worker}
	flags := swarm.UpdateFlags{RotateWorkerToken: true, RotateManagerToken: true}
	if err := e.docker.SwarmUpdate(ctx, sw.Version, sw.Spec, flags); err != nil {
		return swarm.JoinTokens{}, dockerErr("rotating the swarm's join tokens", err, secrets)
	}
	after, err := e.docker.SwarmInspect(ctx)
	if err != nil {
		return swarm.JoinTokens{}, dockerErr("reading the rotated join tokens", err, secrets)
	}
	if after.JoinTokens.Worker == sw.JoinTokens.Worker || after.JoinTokens.Manager == sw.JoinTokens.Manager {
		return swarm.JoinTokens{}, errors.New("dockerd accepted the join token rotation but the tokens did not change")
	}
	return after.JoinTokens, nil
}
