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
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
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
	cluster, err := coordinatortest.Start(ctx, coordinatortest.Options{Bin: bin("rivet"), Dir: t.TempDir(),
		Nodes: 3, Bridge: &coordinatortest.Bridge{Subnet: "10.232.100"},
		ExtraArgs: []string{"--log-level", "warn", "--register-rate", "0"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cluster.Stop()
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
	checkFleetState(t, res.Check, 500)
	faults := map[string]bench.FaultReport{}
	for _, f := range res.Faults {
		faults[f.Name] = f
	}
	if f, ok := faults["leader-kill"]; !ok || !f.Recovered {
		t.Errorf("leader kill did not go as planned: %+v", f)
	}
	f, ok := faults["partition"]
	switch {
	case !ok:
		t.Error("the partition never happened")
	case !f.MinorityLostLeader:
		t.Errorf("the cut-off coordinator never noticed it had no leader: %s", f.Detail)
	case !f.MinorityRefused:
		t.Errorf("the cut-off coordinator did not refuse the write with 503: %q", f.MinorityError)
	case !strings.Contains(f.MinorityError, "no leader") || !strings.Contains(f.MinorityError, "majority"):
		t.Errorf("the minority's refusal does not say what is wrong and what to do: %q", f.MinorityError)
	case !f.MajorityAccepted:
		t.Errorf("the majority refused a write during the partition: %s", f.Detail)
	case !f.Recovered:
		t.Errorf("partition: %s", f.Detail)
	}
}

// checkFleetState is the verdict on what the coordinators record after the run: every
// machine listed exactly once on every coordinator and ready, every acknowledged step
// result on record, and one state digest everywhere.
func checkFleetState(t *testing.T, c bench.FleetCheck, machines int) {
	t.Helper()
	for i, n := range c.Listed {
		if n != machines {
			t.Errorf("coordinator c%d lists %d machines, want %d (-1: the listing failed)", i+1, n, machines)
		}
	}
	if c.Duplicates > 0 {
		t.Errorf("%d machine ids or hostnames listed more than once", c.Duplicates)
	}
	for _, problem := range c.NotReady[:min(len(c.NotReady), 10)] {
		t.Errorf("not ready: %s", problem)
	}
	for _, problem := range c.LostAcks[:min(len(c.LostAcks), 10)] {
		t.Errorf("acknowledged but not on record: %s", problem)
	}
	if len(c.NotReady)+len(c.LostAcks) > 0 {
		t.Errorf("%d machines not ready, %d acknowledged results lost", len(c.NotReady), len(c.LostAcks))
	}
	if !c.DigestsEqual {
		t.Errorf("the coordinators' state digests differ (first: %.12s@%d)", c.Digest.SHA256, c.Digest.Index)
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
