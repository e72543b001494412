package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/fsm"
	"github.com/rivetmetal/rivet/coordinator/seal"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/integration/swarmlab"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

const swarmRole = `
name: swarm-host
description: hosts that already run Debian with dockerd; Rivet only forms the Swarm
selector: {labels: {pool: swarm}}
swarm: {role: auto}
`

// TestAgentsFormASwarm is issue 4's Swarm proof on real parts: five real dockerd
// instances in their own namespaces, a service-mode agent beside each, one coordinator.
// The role gives 3 managers over 3 racks and 2 workers; `docker node ls` on a manager
// shows all five Ready with those roles; restarting an agent does not rejoin or
// duplicate; no join token appears in any log or API answer. Exactly one plan creates the
// swarm; `docker node ls`'s managers are the planned managers; after they joined, the
// manager token was rotated and Rivet's state holds the swarm's current one.
func TestAgentsFormASwarm(t *testing.T) {
	testenvLong(t)
	lab := swarmlab.Up(t, 5, swarmlab.Config{Subnet: "10.232.60.0/24"})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cluster := startCluster(ctx, t, coordinatortest.Options{Dir: filepath.Join(dir, "coord"),
		Nodes: 1, Host: lab.HostIP.String(), Admit: shared.AdmitExpected,
		ExtraArgs: []string{"--plan-settle", "2s", "--swarm-lost-manager-grace", lostManagerGrace.String()}})
	admin := cluster.Client()
	applyRoles(ctx, t, admin, swarmRole)

	// The operator's list: each host by its system UUID (its only NIC is a veth, which is
	// no hardware to match), with its rack and pool. The agents say nothing of themselves
	// that a selector reads (their --label is only a fact).
	racks := []string{"r1", "r2", "r3", "r1", "r2"}
	var expected shared.ImportRequest
	for i := range lab.Nodes {
		expected.Machines = append(expected.Machines, shared.ExpectedMachine{UUID: swarmHostUUID(i),
			Labels: map[string]string{"pool": "swarm", "rack": racks[i]}})
	}
	if _, err := admin.ImportExpected(ctx, &expected); err != nil {
		t.Fatal(err)
	}
	agents := make([]*exec.Cmd, len(lab.Nodes))
	exited := make([]chan struct{}, len(lab.Nodes)) // closed when agent i's process is reaped
	logs := make([]string, len(lab.Nodes))
	start := func(i int) {
		n := lab.Nodes[i]
		stateDir := filepath.Join(dir, fmt.Sprintf("agent%d", i))
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			t.Fatal(err)
		}
		_ = os.WriteFile(filepath.Join(stateDir, "none.yaml"), nil, 0o600)
		logs[i] = filepath.Join(dir, fmt.Sprintf("agent%d.log", i))
		logf, err := os.OpenFile(logs[i], os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		cmd := n.Command(ctx, bin("rivet-agent"), "run", "--mode", "service", "--config", filepath.Join(stateDir, "none.yaml"),
			"--server", cluster.Nodes[0].URL(), "--ca-fingerprint", cluster.Fingerprint, "--token", cluster.EnrolToken,
			"--state-dir", stateDir, "--system-uuid", swarmHostUUID(i),
			"--gossip-bind", n.IP.String()+":7946", "--docker-host", n.DockerHost(), "--metrics-addr", "off",
			"--poll-interval", "2s", "--label", "rack=r9", "--log-format", "json")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		waited, err := testenv.StartTied(cmd, syscall.SIGKILL)
		if err != nil {
			t.Fatal(err)
		}
		agents[i], exited[i] = cmd, make(chan struct{})
		go func(gone chan struct{}) { <-waited; logf.Close(); close(gone) }(exited[i])
	}
	stop := func(i int) {
		if agents[i] != nil && agents[i].Process != nil {
			_ = agents[i].Process.Kill()
			select {
			case <-exited[i]:
			case <-time.After(5 * time.Second):
				t.Errorf("agent %d still runs 5 s after SIGKILL", i)
			}
		}
	}
	t.Cleanup(func() {
		for i := range agents {
			stop(i)
		}
		if t.Failed() {
			for i := range logs {
				data, _ := os.ReadFile(logs[i])
				t.Logf("agent %d log:\n%s", i, tail(string(data), 2500))
			}
			t.Logf("coordinator log:\n%s", tail(cluster.Logs(), 4000))
		}
	})
	began := time.Now()
	for i := range lab.Nodes {
		start(i)
	}

	var byIP map[string]*shared.Machine
	testenv.Eventually(t, 4*time.Minute, "five machines ready", func() error {
		ms, err := admin.Machines(ctx)
		if err != nil {
			return err
		}
		if len(ms) != len(lab.Nodes) {
			return fmt.Errorf("%d machines registered", len(ms))
		}
		out := map[string]*shared.Machine{}
		for _, s := range ms {
			if s.State != shared.StateReady {
				return fmt.Errorf("%s is %s (step %q, %s)", s.ID, s.State, s.Step, s.Error)
			}
			m, err := admin.Machine(ctx, s.ID)
			if err != nil {
				return err
			}
			out[m.Addr] = m
		}
		byIP = out
		return nil
	})
	fmt.Printf("rivet-figure: swarm nodes=5 agents_start_to_all_ready_s=%.1f\n", time.Since(began).Seconds())

	wantManager := map[string]bool{}
	managerRacks := map[string]int{}
	var plannedManagers, initiators []string // swarm node ids
	for _, n := range lab.Nodes {
		m := byIP[n.IP.String()]
		if m == nil {
			t.Fatalf("no machine registered from %s", n.IP)
		}
		sw := m.Plan.Steps[len(m.Plan.Steps)-1].Swarm
		wantManager[n.Name] = sw.Role == shared.SwarmManager
		if sw.Role == shared.SwarmManager {
			managerRacks[m.Labels["rack"]]++
			plannedManagers = append(plannedManagers, m.SwarmNodeID)
		}
		if sw.Init {
			initiators = append(initiators, m.SwarmNodeID)
		}
	}
	if len(initiators) != 1 {
		t.Fatalf("%d plans create the swarm, want exactly one", len(initiators))
	}
	if len(managerRacks) != 3 {
		t.Fatalf("managers per rack %v, want one in each of 3 racks", managerRacks)
	}
	var manager *swarmlab.Node
	for _, n := range lab.Nodes {
		if wantManager[n.Name] {
			manager = n
			break
		}
	}
	nodes := nodeList(ctx, t, manager)
	if len(nodes) != 5 {
		t.Fatalf("docker node ls shows %d nodes, want 5", len(nodes))
	}
	var swarmManagers []string
	for _, node := range nodes {
		if node.ManagerStatus != nil {
			swarmManagers = append(swarmManagers, node.ID)
		}
	}
	slices.Sort(swarmManagers)
	slices.Sort(plannedManagers)
	if !slices.Equal(swarmManagers, plannedManagers) {
		t.Fatalf("docker node ls managers %v, planned managers' swarm nodes %v", swarmManagers, plannedManagers)
	}
	for _, node := range nodes {
		isManager := node.ManagerStatus != nil
		if node.Status.State != swarm.NodeStateReady || isManager != wantManager[node.Description.Hostname] {
			t.Fatalf("node %s: state %s manager %v, want ready manager %v", node.Description.Hostname,
				node.Status.State, isManager, wantManager[node.Description.Hostname])
		}
	}

	// Restart one agent: it registers again, finds its swarm step done, joins nothing.
	victim := 3
	before := byIP[lab.Nodes[victim].IP.String()]
	stop(victim)
	start(victim)
	testenv.Eventually(t, time.Minute, "the restarted agent to register again", func() error {
		evs, err := admin.Events(ctx, before.ID)
		if err != nil {
			return err
		}
		n := 0
		for _, e := range evs {
			if e.Kind == shared.EventRegistered {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("%d registrations", n)
		}
		return nil
	})
	after, err := admin.Machine(ctx, before.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != shared.StateReady || after.SwarmNodeID != before.SwarmNodeID {
		t.Fatalf("after an agent restart: %s, swarm node %s (was %s)", after.State, after.SwarmNodeID, before.SwarmNodeID)
	}
	if got := len(nodeList(ctx, t, manager)); got != 5 {
		t.Fatalf("after an agent restart docker node ls shows %d nodes, want 5", got)
	}

	reprovisionKeepsTheWorkload(ctx, t, admin, manager, byIP, wantManager, lab.Nodes)
	retired := retireLeavesTheSwarm(ctx, t, admin, manager, byIP, wantManager, lab.Nodes)
	manager = lostManagerIsReplaced(ctx, t, admin, byIP, wantManager, lab.Nodes, retired, stop) // may have been the lost one

	// No join token anywhere: agent logs, coordinator logs, dockerd logs, API answers.
	var haystack strings.Builder
	for i := range logs {
		data, _ := os.ReadFile(logs[i])
		haystack.Write(data)
	}
	haystack.WriteString(cluster.Logs())
	for _, n := range lab.Nodes {
		haystack.WriteString(n.Log())
	}
	for _, m := range byIP {
		full, err := admin.Machine(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&haystack, "%+v", *full)
	}
	ms, _ := admin.Machines(ctx)
	fmt.Fprintf(&haystack, "%+v", ms)
	if strings.Contains(haystack.String(), "SWMTKN-") {
		t.Fatal("a swarm join token appears in a log or an API answer")
	}

	// The manager token the swarm was created with was handed to the other managers;
	// once they joined it was rotated, and Rivet keeps the swarm's current one.
	current, err := manager.Client(t).SwarmInspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cluster.Stop()
	initial, kept := swarmTokensInLog(t, cluster.Nodes[0].DataDir)
	if initial == "" || kept == initial || kept != current.JoinTokens.Manager {
		t.Fatalf("manager token: initial known %v, rotated %v, Rivet's is the swarm's current %v",
			initial != "", kept != initial, kept == current.JoinTokens.Manager)
	}
}

// retireLeavesTheSwarm is issue 16's first day-two proof: a retired worker leaves the
// swarm by itself. The leader records a removal and names a ready manager; that
// manager's agent removes the node through its own dockerd and rotates both join tokens,
// so the retired OS cannot join again with a token it kept. The swarm's other nodes stay.
func retireLeavesTheSwarm(ctx context.Context, t *testing.T, admin *shared.Client, manager *swarmlab.Node,
	byIP map[string]*shared.Machine, wantManager map[string]bool, nodes []*swarmlab.Node) *shared.Machine {
	t.Helper()
	var retired *shared.Machine
	for _, n := range nodes {
		if !wantManager[n.Name] {
			retired = byIP[n.IP.String()]
			break
		}
	}
	before, err := manager.Client(t).SwarmInspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Action(ctx, retired.ID, shared.ActionRetire, "day-two test: retire a worker"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Minute, "the retired worker removed from the swarm", func() error {
		for _, node := range nodeList(ctx, t, manager) {
			if node.ID == retired.SwarmNodeID {
				return fmt.Errorf("docker node ls still lists %s (%s)", node.ID, node.Status.State)
			}
		}
		m, err := admin.Machine(ctx, retired.ID)
		if err != nil {
			return err
		}
		if m.SwarmNodeID != "" {
			return fmt.Errorf("Rivet still records swarm node %s for it", m.SwarmNodeID)
		}
		return nil
	})
	if got := len(nodeList(ctx, t, manager)); got != len(nodes)-1 {
		t.Fatalf("after retiring one worker docker node ls shows %d nodes, want %d", got, len(nodes)-1)
	}
	after, err := manager.Client(t).SwarmInspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.JoinTokens.Worker == before.JoinTokens.Worker || after.JoinTokens.Manager == before.JoinTokens.Manager {
		t.Fatal("the join tokens the retired node may have kept were not rotated")
	}
	said := timelineOf(ctx, t, admin, retired.ID, shared.EventSwarm)
	if len(said) < 2 || !strings.Contains(said[len(said)-1], "removed node "+retired.SwarmNodeID) {
		t.Fatalf("the retired machine's timeline says %q, want the removal asked and done", said)
	}
	t.Logf("retired %s: %s", retired.ID, said[len(said)-1])
	return retired
}

// lostManagerGrace is the test's --swarm-lost-manager-grace.
const lostManagerGrace = 10 * time.Second

// lostManagerIsReplaced is issue 16's lost-manager proof on real engines: the manager in
// the rack of the one worker left loses its power (dockerd and agent killed). Past the
// grace period the coordinator has a ready manager promote that worker, then demote and
// remove the lost one: `docker node ls` again shows three reachable managers, one per
// rack, and the lost node is gone.
func lostManagerIsReplaced(ctx context.Context, t *testing.T, admin *shared.Client, byIP map[string]*shared.Machine,
	wantManager map[string]bool, nodes []*swarmlab.Node, retired *shared.Machine, stopAgent func(int)) (survivor *swarmlab.Node) {
	t.Helper()
	var worker *shared.Machine
	for _, n := range nodes {
		if m := byIP[n.IP.String()]; !wantManager[n.Name] && m.ID != retired.ID {
			worker = m
		}
	}
	lostAt := -1
	for i, n := range nodes {
		m := byIP[n.IP.String()]
		switch {
		case wantManager[n.Name] && m.Labels["rack"] == worker.Labels["rack"]:
			lostAt = i
		case wantManager[n.Name]:
			survivor = n
		}
	}
	lost := byIP[nodes[lostAt].IP.String()]
	t.Logf("powering off manager %s (rack %s); worker %s is in its rack", lost.ID, lost.Labels["rack"], worker.ID)
	stopAgent(lostAt)
	if err := nodes[lostAt].PowerOff(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	testenv.Eventually(t, 3*time.Minute, "three reachable managers, one per rack, without the lost one", func() error {
		racks := map[string]bool{}
		reachable := 0
		for _, node := range nodeList(ctx, t, survivor) {
			if node.ID == lost.SwarmNodeID {
				return fmt.Errorf("docker node ls still lists the lost manager (%s)", node.Status.State)
			}
			if node.ManagerStatus == nil || node.ManagerStatus.Reachability != swarm.ReachabilityReachable {
				continue
			}
			reachable++
			m := machineOfNode(byIP, node.ID)
			if m == nil {
				return fmt.Errorf("manager node %s is no machine of the test", node.ID)
			}
			racks[m.Labels["rack"]] = true
		}
		if reachable != 3 || len(racks) != 3 {
			return fmt.Errorf("%d reachable managers over racks %v", reachable, racks)
		}
		return nil
	})
	fmt.Printf("rivet-figure: swarm lost_manager_replaced_s=%.1f grace_s=%.0f\n",
		time.Since(began).Seconds(), lostManagerGrace.Seconds())
	promoted, err := admin.Machine(ctx, worker.ID)
	if err != nil {
		t.Fatal(err)
	}
	if role := promoted.Plan.Steps[len(promoted.Plan.Steps)-1].Swarm.Role; role != shared.SwarmManager {
		t.Fatalf("the promoted worker's plan says %s, want manager", role)
	}
	return survivor
}

func machineOfNode(byIP map[string]*shared.Machine, nodeID string) *shared.Machine {
	for _, m := range byIP {
		if m.SwarmNodeID == nodeID {
			return m
		}
	}
	return nil
}

// swarmTokensInLog reads a stopped coordinator's Raft log, with its seal key (the log
// holds the tokens sealed): the manager token of the swarm's creation report, and the
// manager token in the state the log replays to.
func swarmTokensInLog(t *testing.T, dataDir string) (initial, kept string) {
	t.Helper()
	key, err := seal.Load(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, "raft.db"),
		BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	first, _ := db.FirstIndex()
	last, _ := db.LastIndex()
	if first != 1 {
		t.Fatalf("the log starts at %d: it was compacted, the creation report is gone", first)
	}
	replayed := state.New()
	replayed.UseSealKey(key)
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := db.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if l.Type != raft.LogCommand || len(l.Data) == 0 {
			continue
		}
		if fsm.Type(l.Data[0]) == fsm.TypeSwarmReport && initial == "" {
			var r state.SwarmReport
			if err := json.Unmarshal(l.Data[1:], &r); err == nil && r.Report.ManagerToken != "" && !r.Report.Rotated {
				if initial, err = key.Open(r.Report.ManagerToken); err != nil {
					t.Fatalf("the creation report's manager token does not open with seal.key: %v", err)
				}
			}
		}
		fsm.Apply(replayed, l.Data, l.Index)
	}
	return initial, replayed.Swarm().ManagerToken
}

func nodeList(ctx context.Context, t *testing.T, n *swarmlab.Node) []swarm.Node {
	t.Helper()
	nodes, err := n.Client(t).NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return nodes
}

// swarmHostUUID is the system UUID the agent of swarm host i reports.
func swarmHostUUID(i int) string { return fmt.Sprintf("5a4a0000-0000-4000-8000-%012d", i) }
