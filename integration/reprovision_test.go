package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/rivetmetal/rivet/integration/swarmlab"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// The workload of the day-two swarm tests: a replicated busybox service from an image
// imported into every engine (no registry here). dnsrr: this kernel has no IPVS, so the
// swarm's virtual IPs cannot work (../shared/notes/swarm-in-netns.md).
const (
	workloadImage    = "rivet-test/busybox:local"
	workloadService  = "rivet-workload"
	workloadReplicas = 4
)

// startWorkload imports the busybox image into every node and starts the service.
func startWorkload(ctx context.Context, t *testing.T, manager *swarmlab.Node, nodes []*swarmlab.Node) {
	t.Helper()
	rootfs := busyboxRootfs(t)
	for _, n := range nodes {
		out, err := n.Client(t).ImageImport(ctx, image.ImportSource{Source: bytes.NewReader(rootfs), SourceName: "-"},
			workloadImage, image.ImportOptions{Changes: []string{`CMD ["/bin/sh"]`, "ENV PATH=/bin"}})
		if err != nil {
			t.Fatalf("importing the workload image into %s: %v", n.Name, err)
		}
		_ = out.Close()
	}
	replicas := uint64(workloadReplicas)
	stop := time.Second
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: workloadService},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: workloadImage,
			Command: []string{"/bin/busybox", "httpd", "-f", "-p", "8080"}, StopGracePeriod: &stop}},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR},
	}
	if _, err := manager.Client(t).ServiceCreate(ctx, spec, swarm.ServiceCreateOptions{QueryRegistry: false}); err != nil {
		t.Fatalf("creating the workload service: %v", err)
	}
	c := manager.Client(t)
	testenv.Eventually(t, 2*time.Minute, "the workload at its replicas", func() error {
		running, err := workloadRunning(ctx, c)
		if err != nil || running != workloadReplicas {
			return fmt.Errorf("%d of %d tasks running (%v)", running, workloadReplicas, err)
		}
		return nil
	})
}

// busyboxRootfs is a tar of a root file system with busybox-static and a few links.
func busyboxRootfs(t *testing.T) []byte {
	t.Helper()
	bb, err := os.ReadFile(testenv.RequireCommand(t, "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	add(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}, nil)
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))}, bb)
	for _, a := range []string{"sh", "sleep", "httpd", "hostname"} {
		add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// workloadRunning counts the workload's running tasks.
func workloadRunning(ctx context.Context, c *client.Client) (int, error) {
	services, err := c.ServiceList(ctx, swarm.ServiceListOptions{Status: true})
	if err != nil {
		return 0, err
	}
	for _, s := range services {
		if s.Spec.Name == workloadService && s.ServiceStatus != nil {
			return int(s.ServiceStatus.RunningTasks), nil
		}
	}
	return 0, fmt.Errorf("no service %s", workloadService)
}

// swarmWatch samples the swarm from a manager that stays while a test changes it: the
// fewest reachable managers and the fewest running workload tasks it saw.
type swarmWatch struct {
	mu          sync.Mutex
	minManagers int
	minRunning  int
	samples     int
	stop        func()
	done        chan struct{}
}

func watchSwarm(ctx context.Context, c *client.Client) *swarmWatch {
	w := &swarmWatch{minManagers: 1 << 30, minRunning: 1 << 30, done: make(chan struct{})}
	ctx, w.stop = context.WithCancel(ctx)
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			managers, errM := reachableManagers(ctx, c)
			running, errR := workloadRunning(ctx, c)
			w.mu.Lock()
			if errM == nil {
				w.minManagers = min(w.minManagers, managers)
			}
			if errR == nil {
				w.minRunning = min(w.minRunning, running)
			}
			w.samples++
			w.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return w
}

// end stops the watch and returns what it saw.
func (w *swarmWatch) end() (minManagers, minRunning, samples int) {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.minManagers, w.minRunning, w.samples
}

func reachableManagers(ctx context.Context, c *client.Client) (int, error) {
	nodes, err := c.NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, node := range nodes {
		if node.ManagerStatus != nil && node.ManagerStatus.Reachability == swarm.ReachabilityReachable {
			n++
		}
	}
	return n, nil
}

// reprovisionKeepsTheWorkload is issue 16's re-provisioning proof on real engines, for
// hosts that keep their OS (service-mode agents): a manager other than the watching one
// is re-provisioned while the workload runs. Rivet drains it with a surge (the workload
// never runs fewer than its four tasks, sampled every 200 ms), promotes a worker (in a rack without a manager, else the fewest)
// before it demotes and removes the node, rotates the join tokens, plans the machine
// again and its engine joins as a new node, a manager again, and the stand-in is demoted.
// Meanwhile the watcher never sees fewer than three reachable managers. byIP and
// wantManager are updated to the swarm after it.
func reprovisionKeepsTheWorkload(ctx context.Context, t *testing.T, admin *shared.Client, watcher *swarmlab.Node,
	byIP map[string]*shared.Machine, wantManager map[string]bool, nodes []*swarmlab.Node) {
	t.Helper()
	startWorkload(ctx, t, watcher, nodes)
	var target *shared.Machine
	var targetNode *swarmlab.Node
	for _, n := range nodes {
		if wantManager[n.Name] && n != watcher {
			target, targetNode = byIP[n.IP.String()], n
			break
		}
	}
	tokens, err := watcher.Client(t).SwarmInspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	watch := watchSwarm(ctx, watcher.Client(t))
	began := time.Now()
	if _, err := admin.Reprovision(ctx, target.ID, &shared.ReprovisionRequest{Reason: "day-two test"}); err != nil {
		t.Fatal(err)
	}
	// The phases as the API shows them, for the figures.
	phaseAt := map[shared.ReprovisionPhase]time.Duration{}
	testenv.Eventually(t, 4*time.Minute, "the re-provisioned manager ready again", func() error {
		m, err := admin.Machine(ctx, target.ID)
		if err != nil {
			return err
		}
		if m.Reprovision != nil {
			if _, seen := phaseAt[m.Reprovision.Phase]; !seen {
				phaseAt[m.Reprovision.Phase] = time.Since(began)
			}
			return fmt.Errorf("phase %s, %s", m.Reprovision.Phase, m.State)
		}
		if m.State != shared.StateReady || m.SwarmNodeID == "" || m.SwarmNodeID == target.SwarmNodeID {
			return fmt.Errorf("%s, swarm node %q (was %q)", m.State, m.SwarmNodeID, target.SwarmNodeID)
		}
		return nil
	})
	took := time.Since(began)
	minManagers, minRunning, samples := watch.end()
	fmt.Printf("rivet-figure: swarm reprovision_in_place_s=%.1f drain_at_s=%.1f replace_at_s=%.1f leave_at_s=%.1f reinstall_at_s=%.1f restore_at_s=%.1f min_reachable_managers=%d min_workload_running=%d/%d samples=%d\n",
		took.Seconds(), phaseAt[shared.ReprovisionDrain].Seconds(), phaseAt[shared.ReprovisionReplace].Seconds(),
		phaseAt[shared.ReprovisionLeave].Seconds(), phaseAt[shared.ReprovisionReinstall].Seconds(), phaseAt[shared.ReprovisionRestore].Seconds(),
		minManagers, minRunning, workloadReplicas, samples)
	if minManagers < 3 {
		t.Fatalf("while re-provisioning a manager the swarm had only %d reachable managers at one time (want never below 3)", minManagers)
	}
	if minRunning < workloadReplicas {
		t.Fatalf("while its node was drained the workload ran only %d of its %d tasks at one time (want never fewer)", minRunning, workloadReplicas)
	}

	// The swarm now: five nodes, the old one gone, three reachable managers over three
	// racks, the workload at its replicas, and new join tokens.
	after, err := admin.Machine(ctx, target.ID)
	if err != nil {
		t.Fatal(err)
	}
	list := nodeList(ctx, t, watcher)
	if len(list) != len(nodes) {
		t.Fatalf("after re-provisioning docker node ls shows %d nodes, want %d", len(list), len(nodes))
	}
	for _, node := range list {
		if node.ID == target.SwarmNodeID {
			t.Fatalf("docker node ls still lists the re-provisioned machine's old node %s", node.ID)
		}
	}
	for _, n := range nodes { // refresh: roles and node ids changed
		m, err := admin.Machine(ctx, byIP[n.IP.String()].ID)
		if err != nil {
			t.Fatal(err)
		}
		byIP[n.IP.String()] = m
	}
	racks := map[string]bool{}
	for _, node := range list {
		m := machineOfNode(byIP, node.ID)
		if m == nil {
			t.Fatalf("node %s is no machine of the test", node.ID)
		}
		isManager := node.ManagerStatus != nil && node.ManagerStatus.Reachability == swarm.ReachabilityReachable
		if isManager {
			racks[m.Labels["rack"]] = true
		}
		if node.Status.State != swarm.NodeStateReady || node.Spec.Availability != swarm.NodeAvailabilityActive {
			t.Fatalf("node %s (%s): %s, %s", node.ID, m.ID, node.Status.State, node.Spec.Availability)
		}
		wantManager[node.Description.Hostname] = isManager
	}
	if len(racks) != 3 || !wantManager[targetNode.Name] {
		t.Fatalf("after re-provisioning: managers over racks %v, the re-provisioned one a manager %v; want 3 racks, and it a manager again",
			racks, wantManager[targetNode.Name])
	}
	if running, err := workloadRunning(ctx, watcher.Client(t)); err != nil || running != workloadReplicas {
		t.Fatalf("after re-provisioning the workload runs %d of %d tasks (%v)", running, workloadReplicas, err)
	}
	now, err := watcher.Client(t).SwarmInspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if now.JoinTokens.Worker == tokens.JoinTokens.Worker || now.JoinTokens.Manager == tokens.JoinTokens.Manager {
		t.Fatal("re-provisioning did not rotate the join tokens the old OS knew")
	}
	timeline := strings.Join(timelineOf(ctx, t, admin, target.ID, shared.EventAction, shared.EventSwarm), "\n")
	for _, want := range []string{"re-provisioning started", "drained this node", "re-provisioning: replace",
		"promoted in place of this", "re-provisioning: leave", "removed node " + target.SwarmNodeID, "re-provisioning: reinstall",
		"re-provisioning: restore", "re-provisioned in "} {
		if !strings.Contains(timeline, want) {
			t.Fatalf("the timeline lacks %q:\n%s", want, timeline)
		}
	}
	t.Logf("re-provisioned %s in %s (node %s → %s), min %d reachable managers, workload min %d/%d running",
		target.ID, took.Round(time.Second), target.SwarmNodeID, after.SwarmNodeID, minManagers, minRunning, workloadReplicas)
}

// timelineOf returns the messages of machine id's events of the given kinds, in order.
func timelineOf(ctx context.Context, t *testing.T, admin *shared.Client, id shared.MachineID, kinds ...string) []string {
	t.Helper()
	evs, err := admin.Events(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var said []string
	for _, e := range evs {
		if slices.Contains(kinds, e.Kind) {
			said = append(said, e.Message)
		}
	}
	return said
}
