package swarmlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dockerswarm "github.com/docker/docker/api/types/swarm"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/swarm"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestUpDownLeavesNothing brings up two nodes, checks each is a separate dockerd with its
// own hostname, and that Down removes every trace.
func TestUpDownLeavesNothing(t *testing.T) {
	t.Parallel() // each lab has its own names and subnet
	lab := Up(t, 2, Config{Subnet: "10.231.41.0/24"})
	ctx := context.Background()
	ids := map[string]bool{}
	for _, n := range lab.Nodes {
		info, err := n.Client(t).Info(ctx)
		if err != nil {
			t.Fatalf("%s: docker info: %v", n.Name, err)
		}
		if info.Name != n.Name {
			t.Errorf("%s: dockerd reports hostname %q", n.Name, info.Name)
		}
		ids[info.ID] = true
		// The node's address is on its own eth0, reachable from the host's veth.
		out, err := n.Command(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), n.IP.String()+"/24") {
			t.Errorf("%s: eth0: %v %s", n.Name, err, out)
		}
	}
	if len(ids) != 2 {
		t.Errorf("the two dockerds share an identity: %v", ids)
	}
	busybox := testenv.RequireCommand(t, "busybox")
	if out, err := lab.Nodes[1].Command(ctx, busybox, "ping", "-c", "1", "-W", "5", lab.Nodes[0].IP.String()).CombinedOutput(); err != nil {
		t.Errorf("node 2 cannot reach node 1: %v %s", err, out)
	}

	if err := lab.Down(); err != nil {
		t.Fatalf("Down: %v", err)
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), lab.Name) {
		t.Errorf("namespaces left: %s", out)
	}
	for _, p := range []string{"/sys/class/net/" + lab.HostLink, lab.dir, "/etc/netns/" + lab.Nodes[0].NetNS,
		"/sys/fs/cgroup/memory/" + lab.Nodes[0].Name} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is left", p)
		}
	}
	if procs := procsOf([]string{lab.Name}, nil, nil); len(procs) > 0 {
		t.Errorf("processes left: %v", procs)
	}
}

// TestSwarmExecutorFormsASwarm drives the agent's swarm step on five real dockerds: the
// first creates the swarm, two join as managers, two as workers; every re-run is a no-op;
// a node in another swarm or in the wrong role fails permanently with what to do; a locked
// node is reported as such; and no join token ever appears in a log or an error.
func TestSwarmExecutorFormsASwarm(t *testing.T) {
	t.Parallel() // each lab has its own names and subnet
	lab := Up(t, 5, Config{Subnet: "10.231.40.0/24"})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	var logs testenv.LogBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	roles := []string{shared.SwarmManager, shared.SwarmManager, shared.SwarmManager, shared.SwarmWorker, shared.SwarmWorker}
	coord := newFakeCoordinator()
	ids := make([]shared.MachineID, len(lab.Nodes))
	execs := make([]*swarm.Executor, len(lab.Nodes))
	for i, n := range lab.Nodes {
		ids[i] = shared.MachineID(fmt.Sprintf("m-%016x", 0xa1+i))
		coord.roles[ids[i]] = roles[i]
		e, err := swarm.New(swarm.Config{MachineID: ids[i], Coordinator: coord, DockerHost: n.DockerHost(),
			AdvertiseAddr: n.IP.String(), Wait: 30 * time.Second, Logger: logger.With("node", n.Name)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		execs[i] = e
	}
	coord.initBy = ids[0]
	start := time.Now()
	phase := func(what string) {
		t.Logf("%s: %s", what, time.Since(start).Round(time.Millisecond))
		start = time.Now()
	}

	var mu sync.Mutex
	var errTexts []string // every error the executor returned, searched for tokens at the end
	run := func(i int) (shared.StepStatus, error) {
		s := shared.Step{Name: "swarm", Kind: shared.StepSwarm, Phase: shared.PhaseDisk,
			Swarm: &shared.SwarmStep{Role: coord.role(ids[i]), Init: ids[i] == coord.initBy}}
		st, err := execs[i].Run(ctx, s, nil)
		if err != nil {
			mu.Lock()
			errTexts = append(errTexts, err.Error()+" hint: "+step.HintOf(err))
			mu.Unlock()
		}
		return st, err
	}
	mustRun := func(i int, want shared.StepStatus) {
		t.Helper()
		if st, err := run(i); st != want || err != nil {
			t.Fatalf("node %d: Run = %s, %v; want %s", i+1, st, err, want)
		}
	}

	// Node 1 creates the swarm, but its report to the coordinator is lost.
	coord.failReports[ids[0]] = 1
	if st, err := run(0); st != shared.StepFailed || err == nil || !strings.Contains(err.Error(), "telling the coordinator") {
		t.Fatalf("node 1 with a lost report: Run = %s, %v; want a failed report", st, err)
	}
	// The retry finds the swarm this machine created, touches nothing, and reports it.
	mustRun(0, shared.StepSkipped)
	if coord.clusterID == "" || coord.managerToken == "" || coord.workerToken == "" {
		t.Fatal("the first manager did not report the swarm's id and tokens")
	}
	initToken := coord.managerToken

	// The second and third managers join with that token; the third completes the
	// planned set, is told to rotate the manager token, and reports the new one.
	coord.rotateAt = 3
	mustRun(1, shared.StepSucceeded)
	mustRun(2, shared.StepSucceeded)
	current, err := lab.Nodes[0].Client(t).SwarmInspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if coord.rotatedBy != ids[2] || coord.managerToken == initToken || coord.managerToken != current.JoinTokens.Manager {
		t.Fatalf("manager token after the planned managers joined: rotated by %q, changed %v, equals the swarm's current %v",
			coord.rotatedBy, coord.managerToken != initToken, coord.managerToken == current.JoinTokens.Manager)
	}
	var wg sync.WaitGroup
	statuses := make([]shared.StepStatus, len(lab.Nodes))
	runErrs := make([]error, len(lab.Nodes))
	for _, i := range []int{3, 4} {
		wg.Add(1)
		go func() { defer wg.Done(); statuses[i], runErrs[i] = run(i) }()
	}
	wg.Wait()
	for _, i := range []int{3, 4} {
		if statuses[i] != shared.StepSucceeded || runErrs[i] != nil {
			t.Fatalf("worker node %d: Run = %s, %v", i+1, statuses[i], runErrs[i])
		}
	}
	manager := lab.Nodes[0].Client(t)
	checkNodes := func() {
		t.Helper()
		nodes := waitReady(ctx, t, manager, len(lab.Nodes))
		byHost := map[string]dockerswarm.Node{}
		for _, n := range nodes {
			byHost[n.Description.Hostname] = n
		}
		if len(byHost) != len(lab.Nodes) {
			t.Fatalf("docker node ls shows %d distinct hosts, want %d", len(byHost), len(lab.Nodes))
		}
		for i, ln := range lab.Nodes {
			n, ok := byHost[ln.Name]
			switch {
			case !ok:
				t.Errorf("%s is not in the swarm", ln.Name)
			case string(n.Spec.Role) != roles[i]:
				t.Errorf("%s is a %s, want %s", ln.Name, n.Spec.Role, roles[i])
			case n.ID != coord.nodeID(ids[i]):
				t.Errorf("%s has node id %s, coordinator was told %q", ln.Name, n.ID, coord.nodeID(ids[i]))
			case roles[i] == shared.SwarmManager && (n.ManagerStatus == nil || n.ManagerStatus.Reachability != dockerswarm.ReachabilityReachable):
				t.Errorf("manager %s is not reachable: %+v", ln.Name, n.ManagerStatus)
			}
		}
	}
	checkNodes()
	phase("swarm of 5 formed (init with a lost report, 2 managers, 2 workers) and checked")

	// Every node again: already done, nothing changes, no duplicate nodes.
	for i := range lab.Nodes {
		mustRun(i, shared.StepSkipped)
	}
	checkNodes()
	phase("second run on every node: all skipped")

	// The coordinator names another swarm for manager node 2.
	coord.setCluster(ids[1], "bogusclusterid")
	st, err := run(1)
	wantPermanent(t, "node 2 in the wrong swarm", st, err, "node is in swarm "+coord.clusterID+", plan wants swarm bogusclusterid",
		"docker swarm leave --force")
	coord.setCluster(ids[1], "")

	// The plan makes worker node 4 a manager: it must be promoted by an operator.
	coord.setRole(ids[3], shared.SwarmManager)
	st, err = run(3)
	wantPermanent(t, "worker node 4 planned as manager", st, err, "is a worker in the swarm, but the plan wants a manager",
		"docker node promote "+coord.nodeID(ids[3]))
	coord.setRole(ids[3], shared.SwarmWorker)

	// Node 5 leaves and creates a swarm of its own.
	c5 := lab.Nodes[4].Client(t)
	if err := c5.SwarmLeave(ctx, true); err != nil {
		t.Fatal(err)
	}
	init5 := dockerswarm.InitRequest{ListenAddr: "0.0.0.0:2377", AdvertiseAddr: lab.Nodes[4].IP.String()}
	if _, err := c5.SwarmInit(ctx, init5); err != nil {
		t.Fatal(err)
	}
	other, err := c5.SwarmInspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err = run(4)
	wantPermanent(t, "node 5 in another swarm", st, err, "node is in swarm "+other.ID+", plan wants swarm "+coord.clusterID,
		"run `docker swarm leave --force` on it or retire the machine")

	// Node 5's own swarm, now with autolock, after a dockerd restart: locked.
	if err := c5.SwarmLeave(ctx, true); err != nil {
		t.Fatal(err)
	}
	init5.AutoLockManagers = true // the engine takes it from the spec; the CLI sets both
	init5.Spec.EncryptionConfig.AutoLockManagers = true
	if _, err := c5.SwarmInit(ctx, init5); err != nil {
		t.Fatal(err)
	}
	if err := lab.Nodes[4].Restart(); err != nil {
		t.Fatal(err)
	}
	phase("node 5 in another swarm, re-initialised with autolock, dockerd restarted")
	st, err = run(4)
	wantPermanent(t, "node 5 locked", st, err, "node's swarm is locked", "docker swarm unlock")

	// No join token anywhere: not in the executor's logs, not in its errors, not in any
	// dockerd's log.
	everything := logs.String() + strings.Join(errTexts, "\n")
	for _, n := range lab.Nodes {
		everything += n.Log()
	}
	if !strings.Contains(logs.String(), "created the swarm") || len(errTexts) < 5 {
		t.Fatalf("the token check would look at too little: %d bytes of logs, %d errors", logs.Len(), len(errTexts))
	}
	for _, tok := range []string{initToken, coord.managerToken, coord.workerToken, other.JoinTokens.Manager, other.JoinTokens.Worker} {
		if strings.Contains(everything, tok) {
			t.Errorf("a join token appears in the logs or errors")
		}
	}
	if strings.Contains(everything, "SWMTKN-1-") {
		t.Errorf("something shaped like a join token appears in the logs or errors")
	}
}

// wantPermanent checks a failure that retrying cannot fix, its message and its hint.
func wantPermanent(t *testing.T, what string, st shared.StepStatus, err error, msg, hint string) {
	t.Helper()
	switch {
	case st != shared.StepFailed || err == nil:
		t.Errorf("%s: Run = %s, %v; want a failure", what, st, err)
	case !step.IsPermanent(err):
		t.Errorf("%s: error %q is not permanent", what, err)
	case !strings.Contains(err.Error(), msg):
		t.Errorf("%s: error %q lacks %q", what, err, msg)
	case !strings.Contains(step.HintOf(err), hint):
		t.Errorf("%s: hint %q lacks %q", what, step.HintOf(err), hint)
	}
}

// waitReady waits until the swarm lists want nodes and all are ready, and returns them.
func waitReady(ctx context.Context, t *testing.T, c interface {
	NodeList(context.Context, dockerswarm.NodeListOptions) ([]dockerswarm.Node, error)
}, want int) []dockerswarm.Node {
	t.Helper()
	var nodes []dockerswarm.Node
	testenv.Eventually(t, time.Minute, fmt.Sprintf("%d ready swarm nodes", want), func() (err error) {
		nodes, err = c.NodeList(ctx, dockerswarm.NodeListOptions{})
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes {
			if n.Status.State == dockerswarm.NodeStateReady {
				ready++
			}
		}
		if len(nodes) != want || ready != want {
			return fmt.Errorf("docker node ls: %d nodes, %d ready", len(nodes), ready)
		}
		return nil
	})
	return nodes
}

// fakeCoordinator stands in for the coordinator's swarm endpoints: the first manager
// creates the swarm, the others get its tokens and address; the manager whose report
// makes rotateAt managers is told to rotate the manager token.
type fakeCoordinator struct {
	mu           sync.Mutex
	rotateAt     int // 0: never ask for a rotation
	rotatedBy    shared.MachineID
	managers     map[shared.MachineID]bool
	roles        map[shared.MachineID]string
	initBy       shared.MachineID
	clusterID    string
	addr         string
	managerToken string
	workerToken  string
	nodeIDs      map[shared.MachineID]string
	failReports  map[shared.MachineID]int
	clusterOf    map[shared.MachineID]string // the swarm a machine is told to be in, when not clusterID
}

func newFakeCoordinator() *fakeCoordinator {
	return &fakeCoordinator{roles: map[shared.MachineID]string{}, nodeIDs: map[shared.MachineID]string{}, managers: map[shared.MachineID]bool{},
		failReports: map[shared.MachineID]int{}, clusterOf: map[shared.MachineID]string{}}
}

func (f *fakeCoordinator) SwarmJoin(_ context.Context, id shared.MachineID) (*shared.SwarmJoin, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	role, ok := f.roles[id]
	switch {
	case !ok:
		return nil, fmt.Errorf("machine %s has no swarm step", id)
	case f.clusterID == "" && id == f.initBy:
		return &shared.SwarmJoin{Role: role, Init: true}, nil
	case f.clusterID == "":
		return nil, errors.New("no swarm yet: the first manager has not reported")
	}
	j := &shared.SwarmJoin{Role: role, ClusterID: f.clusterID, RemoteAddrs: []string{f.addr}, Token: f.workerToken}
	if role == shared.SwarmManager {
		j.Token = f.managerToken
	}
	if c := f.clusterOf[id]; c != "" {
		j.ClusterID = c
	}
	return j, nil
}

func (f *fakeCoordinator) SwarmReport(_ context.Context, id shared.MachineID, r *shared.SwarmReport) (*shared.SwarmReportAnswer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if f.failReports[id] > 0 {
		f.failReports[id]--
		return nil, errors.New("coordinator unavailable (injected by the test)")
	}
	answer := &shared.SwarmReportAnswer{MachineSummary: shared.MachineSummary{ID: id}}
	switch {
	case r.Rotated:
		if id != f.rotatedBy || r.ManagerToken == f.managerToken {
			return nil, fmt.Errorf("%s sent a rotated token it was not asked for, or the old one", id)
		}
		f.managerToken = r.ManagerToken
		return answer, nil
	case r.ManagerToken != "":
		if id != f.initBy {
			return nil, fmt.Errorf("%s is not the first manager but sent tokens", id)
		}
		f.clusterID, f.addr, f.managerToken, f.workerToken = r.ClusterID, r.Addr, r.ManagerToken, r.WorkerToken
	}
	f.nodeIDs[id] = r.NodeID
	if r.Addr != "" {
		f.managers[id] = true
	}
	if f.rotateAt > 0 && len(f.managers) == f.rotateAt && f.rotatedBy == "" {
		f.rotatedBy, answer.RotateManagerToken = id, true
	}
	return answer, nil
}

func (f *fakeCoordinator) role(id shared.MachineID) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.roles[id]
}

func (f *fakeCoordinator) setRole(id shared.MachineID, r string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.roles[id] = r
}

func (f *fakeCoordinator) setCluster(id shared.MachineID, c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clusterOf[id] = c
}

func (f *fakeCoordinator) nodeID(id shared.MachineID) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodeIDs[id]
}

// TestSweepRemovesLabsOfDeadTests: a lab whose test binary died (a test timeout skips
// t.Cleanup) is removed, processes and all, by the next Up.
func TestSweepRemovesLabsOfDeadTests(t *testing.T) {
	t.Parallel() // each lab has its own names and subnet
	lab := Up(t, 1, Config{Subnet: "10.231.43.0/24"})
	// Pretend the lab belongs to a process that has exited.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	m := lab.manifest()
	m.OwnerPID, m.OwnerStart = dead.Process.Pid, "0"
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(lab.dir, manifestFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(procsOf([]string{lab.dir + "/"}, nil, nil)) == 0 {
		t.Fatal("the lab's dockerd is not running before the sweep")
	}
	var swept []string
	if err := withLock(func() error {
		sweep(func(f string, a ...any) { swept = append(swept, fmt.Sprintf(f, a...)) })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(swept) != 1 || !strings.Contains(swept[0], lab.Name) || !strings.HasSuffix(swept[0], "<nil>") {
		t.Fatalf("sweep said %q; want one lab removed without leftovers", swept)
	}
	if err := leftovers(m, nil); err != nil {
		t.Fatal(err)
	}
}
