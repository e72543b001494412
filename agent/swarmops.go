package agent

import (
	"context"
	"fmt"

	"github.com/rivetmetal/rivet/shared"
)

// SwarmOpRunner carries out day-two swarm operations through this node's dockerd, for a
// ready manager the coordinator names as their runner; *swarm.Executor is one.
type SwarmOpRunner interface {
	RunOp(ctx context.Context, op shared.SwarmOp) shared.SwarmOpReport
}

// runSwarmOps runs the operations the coordinator has for this machine and reports each.
// ran says whether there were any.
func (a *Agent) runSwarmOps(ctx context.Context, runner SwarmOpRunner) (ran bool, err error) {
	id, client := a.identity()
	list, err := client.SwarmOps(ctx, id)
	if err != nil {
		return false, fmt.Errorf("fetching swarm operations: %w", err)
	}
	for _, op := range list.Ops {
		a.log.Info("running a swarm operation", "op", op.ID, "kind", op.Kind, "target", op.Target, "node", op.NodeID, "reason", op.Reason)
		rep := runner.RunOp(ctx, op)
		if err := client.SwarmOpDone(ctx, id, op.ID, &rep); err != nil {
			return true, fmt.Errorf("reporting swarm operation %d: %w", op.ID, err)
		}
	}
	return len(list.Ops) > 0, nil
}
