package swarm

// The executor against real dockerds forming a real swarm is tested in
// integration/swarmlab. These tests cover its decisions, which need no dockerd.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

const machine = shared.MachineID("m-00112233aabbccdd")

type noCoordinator struct{}

func (noCoordinator) SwarmJoin(context.Context, shared.MachineID) (*shared.SwarmJoin, error) {
	return nil, errors.New("not reached")
}

func (noCoordinator) SwarmReport(context.Context, shared.MachineID, *shared.SwarmReport) (*shared.SwarmReportAnswer, error) {
	return nil, errors.New("not reached")
}

func newTestExecutor(t *testing.T) *Executor {
	t.Helper()
	e, err := New(Config{MachineID: machine, Coordinator: noCoordinator{},
		DockerHost: "unix://" + filepath.Join(t.TempDir(), "no-docker.sock"), Wait: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestRedact(t *testing.T) {
	tok := "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"
	msg := "join failed for " + tok + " and for SWMTKN-1-abc-def; secret s3cr3t"
	got := redact(msg, []string{"s3cr3t", ""})
	if strings.Contains(got, tok) || strings.Contains(got, "SWMTKN-1-abc") || strings.Contains(got, "s3cr3t") {
		t.Fatalf("redact left a secret: %q", got)
	}
	if !strings.Contains(got, "join failed for SWMTKN-[redacted]") || !strings.Contains(got, "[redacted]") {
		t.Fatalf("redact = %q", got)
	}
	err := dockerErr("joining", errors.New("bad token "+tok), []string{tok})
	if strings.Contains(err.Error(), tok) || errors.Unwrap(err) != nil {
		t.Fatalf("dockerErr = %q (unwraps to %v); want the token cut out and nothing to unwrap", err, errors.Unwrap(err))
	}
}

func TestCheckJoin(t *testing.T) {
	tests := []struct {
		name      string
		join      shared.SwarmJoin
		plan      shared.SwarmStep
		wantErr   string
		permanent bool
	}{
		{name: "init manager", join: shared.SwarmJoin{Role: "manager", Init: true}, plan: shared.SwarmStep{Role: "manager", Init: true}},
		{name: "worker join", join: shared.SwarmJoin{Role: "worker", Token: "t"}, plan: shared.SwarmStep{Role: "worker"}},
		{name: "plan and coordinator disagree", join: shared.SwarmJoin{Role: "worker"}, plan: shared.SwarmStep{Role: "manager"},
			wantErr: `the coordinator says this node is a swarm "worker" but the plan says "manager"`},
		{name: "worker asked to init", join: shared.SwarmJoin{Role: "worker", Init: true}, plan: shared.SwarmStep{Role: "worker"},
			wantErr: "asks a worker to create the swarm", permanent: true},
		{name: "manager not designated asked to init", join: shared.SwarmJoin{Role: "manager", Init: true},
			plan: shared.SwarmStep{Role: "manager"}, wantErr: "its plan does not designate it", permanent: true},
		{name: "unknown role", join: shared.SwarmJoin{Role: "boss"}, plan: shared.SwarmStep{Role: "boss"}, wantErr: `swarm role "boss"`, permanent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkJoin(&tt.join, &tt.plan)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkJoin: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || step.IsPermanent(err) != tt.permanent {
				t.Fatalf("checkJoin = %v (permanent %v); want %q (permanent %v)", err, step.IsPermanent(err), tt.wantErr, tt.permanent)
			}
		})
	}
}

func TestCheckMember(t *testing.T) {
	manager := func(cluster string, labels map[string]string) swarm.Info {
		return swarm.Info{NodeID: "n1", LocalNodeState: swarm.LocalNodeStateActive, ControlAvailable: true,
			RemoteManagers: []swarm.Peer{{NodeID: "n1", Addr: "10.0.0.11:2377"}},
			Cluster:        &swarm.ClusterInfo{ID: cluster, Spec: swarm.Spec{Annotations: swarm.Annotations{Labels: labels}}}}
	}
	worker := swarm.Info{NodeID: "n4", LocalNodeState: swarm.LocalNodeStateActive,
		RemoteManagers: []swarm.Peer{{NodeID: "n1", Addr: "10.0.0.11:2377"}, {NodeID: "n2", Addr: "10.0.0.12:2377"}}}
	tests := []struct {
		name     string
		join     shared.SwarmJoin
		info     swarm.Info
		wantErr  string // "" means in the right swarm, in the right role
		wantHint string
	}{
		{name: "manager in the named swarm", join: shared.SwarmJoin{Role: "manager", ClusterID: "c1"}, info: manager("c1", nil)},
		{name: "manager in another swarm", join: shared.SwarmJoin{Role: "manager", ClusterID: "c1"}, info: manager("c9", nil),
			wantErr: "node is in swarm c9, plan wants swarm c1", wantHint: "run `docker swarm leave --force` on it or retire the machine"},
		{name: "init: the swarm this machine created earlier",
			join: shared.SwarmJoin{Role: "manager", Init: true}, info: manager("c1", map[string]string{LabelInitBy: string(machine)})},
		{name: "init: a swarm someone else created", join: shared.SwarmJoin{Role: "manager", Init: true},
			info:    manager("c7", map[string]string{LabelInitBy: "m-ffffffffffffffff"}),
			wantErr: "node is in swarm c7, plan wants a new swarm created by this machine"},
		{name: "init: a worker elsewhere", join: shared.SwarmJoin{Role: "manager", Init: true}, info: worker,
			wantErr: "node is in the swarm managed by 10.0.0.11:2377, 10.0.0.12:2377, plan wants the swarm managed by (no managers known)"},
		{name: "worker knows one of the managers", info: worker,
			join: shared.SwarmJoin{Role: "worker", ClusterID: "c1", RemoteAddrs: []string{"10.0.0.12"}}},
		{name: "worker knows none of them", info: worker,
			join:    shared.SwarmJoin{Role: "worker", ClusterID: "c1", RemoteAddrs: []string{"10.0.0.99:2377"}},
			wantErr: "plan wants the swarm managed by 10.0.0.99:2377"},
		{name: "worker planned as manager", info: worker,
			join:    shared.SwarmJoin{Role: "manager", ClusterID: "c1", RemoteAddrs: []string{"10.0.0.11:2377"}},
			wantErr: "node n4 is a worker in the swarm, but the plan wants a manager", wantHint: "docker node promote n4"},
		{name: "manager planned as worker", info: manager("c1", nil),
			join:    shared.SwarmJoin{Role: "worker", ClusterID: "c1", RemoteAddrs: []string{"10.0.0.11:2377"}},
			wantErr: "node n1 is a manager in the swarm, but the plan wants a worker", wantHint: "docker node demote n1"},
	}
	e := newTestExecutor(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.checkMember(&tt.join, tt.info)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkMember: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !step.IsPermanent(err) {
				t.Fatalf("checkMember = %v; want a permanent %q", err, tt.wantErr)
			}
			if !strings.Contains(step.HintOf(err), tt.wantHint) {
				t.Fatalf("hint %q lacks %q", step.HintOf(err), tt.wantHint)
			}
		})
	}
}

func TestRunRefusesOtherSteps(t *testing.T) {
	e := newTestExecutor(t)
	st, err := e.Run(context.Background(), shared.Step{Name: "disk", Kind: shared.StepDisk}, nil)
	if st != shared.StepFailed || !step.IsPermanent(err) {
		t.Fatalf("Run(disk step) = %s, %v; want a permanent failure", st, err)
	}
}

func TestRunWithoutDockerd(t *testing.T) {
	e := newTestExecutor(t)
	s := shared.Step{Name: "swarm", Kind: shared.StepSwarm, Swarm: &shared.SwarmStep{Role: "worker"}}
	st, err := e.Run(context.Background(), s, nil)
	if st != shared.StepFailed || err == nil || !strings.Contains(err.Error(), "does not answer") ||
		step.IsPermanent(err) || !strings.Contains(step.HintOf(err), "systemctl status docker") {
		t.Fatalf("Run without dockerd = %s, %v (hint %q); want a retryable failure naming dockerd", st, err, step.HintOf(err))
	}
}

// pendingCoordinator answers "swarm pending" a number of times, then the join.
type pendingCoordinator struct {
	noCoordinator
	pending int
	asked   int
	err     error
}

func (c *pendingCoordinator) SwarmJoin(context.Context, shared.MachineID) (*shared.SwarmJoin, error) {
	c.asked++
	if c.asked <= c.pending {
		return nil, shared.Errorf(409, shared.CodeSwarmPending, "retry shortly", "the swarm does not exist yet")
	}
	if c.err != nil {
		return nil, c.err
	}
	return &shared.SwarmJoin{Role: shared.SwarmWorker, Token: "t", ClusterID: "c"}, nil
}

// TestJoinInfoWaitsForThePendingSwarm: a worker whose first manager is still creating
// the swarm waits for it instead of failing the attempt; other refusals end the wait.
func TestJoinInfoWaitsForThePendingSwarm(t *testing.T) {
	tests := []struct {
		name    string
		coord   *pendingCoordinator
		wait    time.Duration
		wantErr string
	}{
		{name: "pending, then the join", coord: &pendingCoordinator{pending: 3}, wait: time.Minute},
		{name: "pending for too long", coord: &pendingCoordinator{pending: 1 << 30}, wait: 300 * time.Millisecond,
			wantErr: "still not created"},
		{name: "another refusal is not waited on", coord: &pendingCoordinator{err: shared.Errorf(409, shared.CodeConflict, "", "no swarm step due")},
			wait: time.Minute, wantErr: "no swarm step due"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Executor{cfg: Config{MachineID: machine, Coordinator: tt.coord, PendingWait: tt.wait}}
			join, err := e.joinInfo(context.Background())
			if tt.wantErr == "" {
				if err != nil || join == nil || tt.coord.asked != tt.coord.pending+1 {
					t.Fatalf("join %v, err %v after %d questions", join, err, tt.coord.asked)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v; want %q", err, tt.wantErr)
			}
		})
	}
}
