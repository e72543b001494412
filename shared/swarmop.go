package shared

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Day-two Swarm operations. The coordinator cannot reach a node's dockerd; a manager's
// own agent can. So the leader records an operation in Raft, names a ready manager to run
// it, and that manager's agent carries it out through its local dockerd and reports back.

// SwarmOpKind is what a Swarm operation does.
type SwarmOpKind string

const (
	// SwarmOpRemove takes a node out of the Swarm for good: demoted first if it is a
	// manager, then removed, then both join tokens are rotated so that the old OS cannot
	// join again with a token it may have kept.
	SwarmOpRemove SwarmOpKind = "remove"
	// SwarmOpPromote makes a worker a manager in place of a lost one (SwarmOp.For), so the
	// swarm keeps its number of reachable managers.
	SwarmOpPromote SwarmOpKind = "promote"
	// SwarmOpDrain sets a node to drain and waits until every service runs its desired
	// tasks, none of them on that node: the first step of a re-provisioning.
	SwarmOpDrain SwarmOpKind = "drain"
	// SwarmOpDemote makes the stand-in of a re-provisioned manager (SwarmOp.For) a worker
	// again once that manager is back.
	SwarmOpDemote SwarmOpKind = "demote"
)

// SwarmOp is one operation a manager's agent runs.
type SwarmOp struct {
	ID      uint64      `json:"id"` // the Raft index that created it
	Kind    SwarmOpKind `json:"kind"`
	Target  MachineID   `json:"target"`  // the machine whose node it acts on
	NodeID  string      `json:"node_id"` // that machine's swarm node id
	Runner  MachineID   `json:"runner"`  // the manager whose agent runs it
	Reason  string      `json:"reason"`
	Created time.Time   `json:"created"`
	// For is the manager a SwarmOpPromote stands in for (lost, or being re-provisioned),
	// or the re-provisioned manager back in service a SwarmOpDemote is for.
	For MachineID `json:"for,omitempty"`
}

// SwarmOpReport is the runner's answer. The tokens are secrets: the rotated join tokens
// of a SwarmOpRemove, sealed at rest like every Swarm token.
type SwarmOpReport struct {
	OK           bool   `json:"ok"`
	Error        string `json:"error,omitempty"`
	Detail       string `json:"detail,omitempty"` // what was done, for the timeline
	ManagerToken string `json:"manager_token,omitempty"`
	WorkerToken  string `json:"worker_token,omitempty"`
	// ManagerAddr is a promoted node's manager address (host:port), from the swarm.
	ManagerAddr string `json:"manager_addr,omitempty"`
}

// MaxSwarmOpText bounds a report's error and detail.
const MaxSwarmOpText = 2048

// Validate checks a report.
func (r *SwarmOpReport) Validate() error {
	if len(r.Error) > MaxSwarmOpText || len(r.Detail) > MaxSwarmOpText {
		return fmt.Errorf("swarm operation report: error and detail are at most %d bytes", MaxSwarmOpText)
	}
	if r.OK == (r.Error != "") {
		return fmt.Errorf("swarm operation report: an error goes with ok=false, and only then")
	}
	if len(r.ManagerToken) > 256 || len(r.WorkerToken) > 256 {
		return fmt.Errorf("swarm operation report: tokens are at most 256 bytes")
	}
	if r.ManagerAddr != "" {
		if _, _, err := net.SplitHostPort(r.ManagerAddr); err != nil || len(r.ManagerAddr) > 64 {
			return fmt.Errorf("swarm operation report: manager address %q: want host:port", r.ManagerAddr)
		}
	}
	return nil
}

// SwarmOps lists the operations a machine runs.
type SwarmOps struct {
	Ops []SwarmOp `json:"ops"`
}

// SwarmOps returns the operations machine id (a manager) is to run.
func (c *Client) SwarmOps(ctx context.Context, id MachineID) (*SwarmOps, error) {
	var ops SwarmOps
	return &ops, c.Do(ctx, http.MethodGet, MachinePath(PathMachineSwarmOps, id), nil, &ops)
}

// SwarmOpDone reports how operation op went.
func (c *Client) SwarmOpDone(ctx context.Context, id MachineID, op uint64, r *SwarmOpReport) error {
	path := MachinePath(PathMachineSwarmOps, id) + "/" + fmt.Sprint(op)
	return c.Do(ctx, http.MethodPost, path, r, nil)
}
