package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// firstRelease is the tag of the first release, protocol 1; its commit is the fallback
// for a clone that has the history but not the tags.
const (
	firstRelease       = "v0.1.0"
	firstReleaseCommit = "4f4e185"
)

// TestRollingUpgradeFromFirstRelease is issue 16's mixed-version proof: three
// coordinators of the first release take registrations under load while they are
// upgraded one by one to this tree. Two followers first; then the old leader is stopped
// and started again on the OLD binary, so that an upgraded leader leads while a member
// that cannot apply protocol-2 commands still runs: the leader must say it waits for that
// member and leave the cluster at protocol 1. Only after the last member runs this tree
// does the cluster move to protocol 2. No acknowledged registration is lost, no
// coordinator panics, and all three end with the same state.
func TestRollingUpgradeFromFirstRelease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	oldBin := buildFirstRelease(t)
	newBin := bin("rivet")
	cluster := startCluster(ctx, t, coordinatortest.Options{Bin: oldBin, Dir: t.TempDir(), Nodes: 3,
		ExtraArgs: []string{"--plan-settle", "10m"}}) // no planning: registrations alone change the state
	leader, err := cluster.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range cluster.Nodes {
		if h := health(ctx, t, cluster, n); h.Protocol != 0 {
			t.Fatalf("guard: %s of the first release reports protocol %d: the old binary is not old", n.ID, h.Protocol)
		}
	}

	load := startRegistrationLoad(ctx, cluster)
	upgrade := func(n *coordinatortest.Node, to string) {
		t.Helper()
		if !cluster.Terminate(n, 30*time.Second) {
			t.Fatalf("%s did not stop within 30 s of SIGTERM", n.ID)
		}
		n.Bin = to
		if err := cluster.Restart(ctx, n); err != nil {
			t.Fatal(err)
		}
		if err := cluster.WaitHealthy(ctx, n); err != nil {
			logs, _ := os.ReadFile(n.LogPath)
			t.Fatalf("%v\n%s's log (tail):\n%s", err, n.ID, tail(string(logs), 1500))
		}
		load.waitMore(ctx, t, 20) // the cluster keeps taking writes with this member back
	}
	for _, n := range cluster.Nodes {
		if n != leader {
			t.Logf("upgrading follower %s to this tree", n.ID)
			upgrade(n, newBin)
		}
	}
	t.Logf("stopping the old leader %s and starting it on the first release again", leader.ID)
	var newLeader *coordinatortest.Node
	for attempt := 1; ; attempt++ {
		// An upgraded member must lead before the old one is back, or the old one may win
		// the election again (seen in CI when it was restarted at once).
		if !cluster.Terminate(leader, 30*time.Second) {
			t.Fatalf("%s did not stop within 30 s of SIGTERM", leader.ID)
		}
		if _, err := cluster.Leader(ctx); err != nil {
			t.Fatal(err)
		}
		leader.Bin = oldBin
		if err := cluster.Restart(ctx, leader); err != nil {
			t.Fatal(err)
		}
		if err := cluster.WaitHealthy(ctx, leader); err != nil {
			t.Fatal(err)
		}
		if newLeader, err = cluster.Leader(ctx); err != nil {
			t.Fatal(err)
		}
		if newLeader != leader {
			break
		}
		if attempt == 3 {
			t.Fatalf("after %d tries the first-release member %s leads again, not an upgraded one", attempt, leader.ID)
		}
	}
	waitLogLine(ctx, t, newLeader, "cluster protocol waits for members to be upgraded", leader.ID+" (protocol 1)")
	if h := health(ctx, t, cluster, newLeader); h.ClusterProtocol != shared.FirstProtocol {
		t.Fatalf("the cluster runs at protocol %d while %s runs the first release", h.ClusterProtocol, leader.ID)
	}
	load.waitMore(ctx, t, 20) // the old member applies what the upgraded leader writes
	if !leader.Running() {
		t.Fatalf("%s (first release) stopped beside an upgraded leader; see %s", leader.ID, leader.LogPath)
	}

	t.Logf("upgrading the last member %s", leader.ID)
	upgrade(leader, newBin)
	testenv.Eventually(t, 2*time.Minute, "every coordinator at cluster protocol 2", func() error {
		for _, n := range cluster.Nodes {
			if h := health(ctx, t, cluster, n); h.Protocol != shared.Protocol || h.ClusterProtocol != shared.Protocol {
				return fmt.Errorf("%s speaks protocol %d, cluster protocol %d", n.ID, h.Protocol, h.ClusterProtocol)
			}
		}
		return nil
	})
	acked := load.stop()
	t.Logf("%d registrations acknowledged during the upgrade", len(acked))
	waitSameDigest(ctx, t, cluster)
	assertAllPresent(ctx, t, cluster, acked)
	for _, n := range cluster.Nodes {
		logs, _ := os.ReadFile(n.LogPath)
		if strings.Contains(string(logs), "panic") {
			t.Fatalf("%s's log holds a panic:\n%s", n.ID, tail(string(logs), 3000))
		}
	}
	out, err := exec.CommandContext(ctx, newBin, "members", "upgrade-check", "--server", cluster.Nodes[0].URL(),
		"--ca-fingerprint", cluster.Fingerprint, "--token", cluster.AdminToken).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nothing to upgrade") {
		t.Fatalf("upgrade-check after the upgrade: %v\n%s", err, out)
	}
}

// buildFirstRelease builds the first release's rivet from this repository's history.
func buildFirstRelease(t *testing.T) string {
	t.Helper()
	root := repoRoot()
	ref := firstRelease
	if exec.Command("git", "-C", root, "rev-parse", "-q", "--verify", ref+"^{commit}").Run() != nil {
		ref = firstReleaseCommit
		if out, err := exec.Command("git", "-C", root, "rev-parse", "-q", "--verify", ref+"^{commit}").CombinedOutput(); err != nil {
			t.Fatalf("neither the tag %s nor its commit %s is in this clone (%v: %s): the upgrade test builds the "+
				"first release from the history; clone without --depth", firstRelease, firstReleaseCommit, err, out)
		}
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", fmt.Sprintf("git -C %q archive %s | tar -x -C %q", root, ref, src))
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extracting %s: %v\n%s", ref, err, out)
	}
	out := filepath.Join(t.TempDir(), "rivet-"+firstRelease)
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w -X github.com/rivetmetal/rivet/shared.Version="+firstRelease,
		"-o", out, "./coordinator/cmd/rivet")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", firstRelease, err, b)
	}
	return out
}

func health(ctx context.Context, t *testing.T, c *coordinatortest.Cluster, n *coordinatortest.Node) *shared.Health {
	t.Helper()
	h, err := c.Client(n).Health(ctx)
	if err != nil {
		t.Fatalf("health of %s: %v", n.ID, err)
	}
	return h
}

// waitLogLine waits until n's log has a line holding every one of parts.
func waitLogLine(ctx context.Context, t *testing.T, n *coordinatortest.Node, parts ...string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, fmt.Sprintf("%s logs %q", n.ID, parts), func() error {
		logs, err := os.ReadFile(n.LogPath)
		if err != nil {
			return err
		}
	lines:
		for _, line := range strings.Split(string(logs), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return nil
		}
		return fmt.Errorf("no such line in %s", n.LogPath)
	})
}

// registrationLoad registers machines round-robin over the cluster's nodes until
// stopped, keeping the ids the cluster acknowledged.
type registrationLoad struct {
	mu     sync.Mutex
	acked  map[shared.MachineID]bool
	count  atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startRegistrationLoad(ctx context.Context, c *coordinatortest.Cluster) *registrationLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &registrationLoad{acked: map[shared.MachineID]bool{}, cancel: cancel}
	clients := make([]*shared.Client, len(c.Nodes)) // a node keeps its address across restarts
	for i, n := range c.Nodes {
		clients[i] = c.Client(n).WithToken(c.EnrolToken)
	}
	var next atomic.Int64
	for w := range 4 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1))
				rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
				resp, err := clients[(i+w)%len(clients)].Register(rctx, coordinatortest.RegisterRequest(i))
				rcancel()
				if err != nil {
					continue // not acknowledged: nothing is promised about it
				}
				l.mu.Lock()
				l.acked[resp.Machine.ID] = true
				l.mu.Unlock()
				l.count.Add(1)
			}
		}()
	}
	return l
}

// waitMore waits until n more registrations were acknowledged.
func (l *registrationLoad) waitMore(ctx context.Context, t *testing.T, n int64) {
	t.Helper()
	want := l.count.Load() + n
	if err := testenv.Poll(ctx, time.Minute, fmt.Sprintf("%d more acknowledged registrations", n), func() error {
		if got := l.count.Load(); got < want {
			return fmt.Errorf("%d of %d", got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func (l *registrationLoad) stop() map[shared.MachineID]bool {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}
