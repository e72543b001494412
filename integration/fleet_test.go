package integration

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/bench"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// TestFleetSurvivesLeaderKillAndPartition is issue 8's CI-sized proof: 500 simulated
// machines (100 of them in the Serf pool) run their whole plan through three real
// coordinators, each in its own network namespace on a bridge. While machines stream
// images the leader is SIGKILLed (and restarted); while they reboot a follower is cut off
// the bridge for 15 s and must refuse a write with a clear error while the majority
// accepts one. In the end every machine is ready, listed once on every coordinator, every
// acknowledged step result is on record, and the three state digests are equal.
func TestFleetSurvivesLeaderKillAndPartition(t *testing.T) {
	testenvLong(t)
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	cluster, err := bench.StartFleetCluster(ctx, bench.FleetClusterOptions{Bin: bin("rivet"), Dir: t.TempDir(),
		Nodes: 3, Netns: true, Subnet: "10.232.100", Prefix: "rvtf", FastElections: true,
		ExtraArgs: []string{"--log-level", "warn"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cluster.Close()
		if left := cluster.Leftovers(); len(left) > 0 {
			t.Errorf("network namespaces or links left behind: %v", left)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range cluster.Nodes {
				t.Logf("%s log (tail):\n%s", n.ID, tail(readFile(n.LogPath), 3000))
			}
		}
	})

	out := &lineLogger{t: t}
	res, err := bench.Fleet(ctx, out, bench.FleetOptions{Cluster: cluster, Machines: 500, SerfMembers: 100,
		Ramp: 10 * time.Second, Poll: 3 * time.Second, StepScale: 0.25, KillLeader: true, Partition: true,
		PartitionHold: 15 * time.Second, Timeout: 8 * time.Minute})
	out.flush()
	if res == nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Error(err)
	}
	if res.Ready != 500 {
		t.Errorf("%d of 500 machines ready", res.Ready)
	}
	c := res.Check
	if !c.OK(500) {
		t.Errorf("state check failed: listed %v, %d duplicates, %d not ready, %d acknowledged results lost, digests equal %v",
			c.Listed, c.Duplicates, len(c.NotReady), len(c.LostAcks), c.DigestsEqual)
	}
	faults := map[string]bench.FaultReport{}
	for _, f := range res.Faults {
		faults[f.Name] = f
	}
	if f, ok := faults["leader-kill"]; !ok || !f.OK {
		t.Errorf("leader kill did not go as planned: %+v", f)
	}
	f, ok := faults["partition"]
	switch {
	case !ok:
		t.Error("the partition never happened")
	case !f.MinorityRefused:
		t.Errorf("the cut-off coordinator did not refuse the write with 503: %q", f.MinorityError)
	case !strings.Contains(f.MinorityError, "no leader") || !strings.Contains(f.MinorityError, "majority"):
		t.Errorf("the minority's refusal does not say what is wrong and what to do: %q", f.MinorityError)
	case !f.OK:
		t.Errorf("partition: %s", f.Detail)
	}
}

// lineLogger passes the bench's output to t.Log line by line.
type lineLogger struct {
	t   *testing.T
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line)
			return len(p), nil
		}
		l.t.Log(strings.TrimRight(line, "\n"))
	}
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 0 {
		l.t.Log(l.buf.String())
		l.buf.Reset()
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
