package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// startThree starts three real coordinators for a test of at most within and returns
// the test's context, the cluster and its leader.
func startThree(t *testing.T, within time.Duration, args ...string) (context.Context, *coordinatortest.Cluster, *coordinatortest.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	t.Cleanup(cancel)
	cluster := startCluster(ctx, t, coordinatortest.Options{Dir: t.TempDir(), Nodes: 3, ExtraArgs: args})
	leader, err := cluster.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, cluster, leader
}

// TestNoWriteAppliedTwiceWhenTheLeaderDiesMidForward: three real coordinators; writes go
// to one follower only, which forwards them to the leader in batches; the leader is
// SIGKILLed while batches are in flight. A forwarded write whose answer was lost may or
// may not be committed: the follower must tell its caller so (outcome_unknown) and must
// not send it again.
//
// The proof is by content. Every write is an operator action (replan of a discovered
// machine, which the state accepts again and again) whose reason is a payload of its
// own, and each application adds "operator action replan by admin: <payload>" to the
// machine's timeline. A write applied twice leaves its payload twice. (Registrations
// would not show it: the state refuses a second registration of the same machine
// without its token, so a blind resend of one passes unseen.) No payload may be on a
// timeline twice, every acknowledged one must be there, and the follower must have gone
// on forwarding to the new leader.
func TestNoWriteAppliedTwiceWhenTheLeaderDiesMidForward(t *testing.T) {
	ctx, cluster, leader := startThree(t, 5*time.Minute, "--plan-settle", "10m")
	var follower *coordinatortest.Node
	for _, n := range cluster.Nodes {
		if n != leader {
			follower = n
			break
		}
	}
	// Only the follower: the client cannot fail over, every write is forwarded.
	admin := cluster.Client(follower)

	const machines, writes = 40, 800 // 20 actions a machine: far below a timeline's cap
	ids := make([]shared.MachineID, machines)
	for i := range ids {
		resp, err := admin.WithToken(cluster.EnrolToken).Register(ctx, coordinatortest.RegisterRequest(i))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = resp.Machine.ID
	}
	testenv.Eventually(t, 30*time.Second, "the follower holds every machine", func() error {
		have, err := admin.Machines(ctx)
		return testenv.Holds(func() bool { return err == nil && len(have) == machines },
			func() string { return fmt.Sprintf("%d machines (%v)", len(have), err) })()
	})

	payload := func(i int) string { return fmt.Sprintf("forward-kill-%04d", i) }
	var (
		mu             sync.Mutex
		acked          = map[string]bool{}
		answers        = map[string]int{} // error code (or "ok") → count
		ackedAfterKill atomic.Int64
		ackCount       atomic.Int64
		killed         atomic.Bool
		wg             sync.WaitGroup
	)
	// The killer kills whoever leads (unless the follower itself took over) at every
	// quarter of the writes, restarting the previous victim first so a majority stays
	// up: each kill is another chance to catch batches in flight.
	const rounds = 3
	quarter := make(chan struct{}, rounds)
	killerDone := make(chan struct{})
	var kills []string
	go func() {
		defer close(killerDone)
		var victim *coordinatortest.Node
		for range rounds {
			if _, ok := <-quarter; !ok {
				return
			}
			if victim != nil {
				if err := cluster.Restart(ctx, victim); err != nil {
					t.Errorf("restarting %s: %v", victim.ID, err)
					return
				}
				victim = nil
			}
			leader, err := cluster.Leader(ctx)
			if err != nil {
				t.Errorf("finding the leader: %v", err)
				return
			}
			if leader == follower {
				kills = append(kills, "none ("+follower.ID+" leads itself)")
				continue
			}
			cluster.Kill(leader)
			killed.Store(true)
			victim = leader
			kills = append(kills, leader.ID)
		}
	}()
	jobs := make(chan int)
	for range 32 { // many writes in flight when the leader dies
		wg.Go(func() {
			for i := range jobs {
				after := killed.Load()
				rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := admin.Action(rctx, ids[i%machines], shared.ActionReplan, payload(i))
				rcancel()
				code := "ok"
				if err != nil {
					if code = shared.CodeOf(err); code == "" {
						code = "transport: " + err.Error()
					}
				}
				mu.Lock()
				answers[code]++
				if err == nil {
					acked[payload(i)] = true
				}
				mu.Unlock()
				if err != nil {
					continue
				}
				if after {
					ackedAfterKill.Add(1)
				}
				if n := ackCount.Add(1); n%(writes/4) == 0 && n < writes {
					quarter <- struct{}{} // never blocks: at most rounds quarters
				}
			}
		})
	}
	for i := range writes {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(quarter)
	<-killerDone
	t.Logf("leaders killed while %s forwarded: %v; answers from the follower: %v", follower.ID, kills, answers)
	if !killed.Load() {
		t.Fatalf("no leader was killed (%v): the test proved nothing", kills)
	}
	if ackedAfterKill.Load() == 0 {
		t.Fatal("no write sent after a leader's kill was acknowledged: the follower took no writes once its leader died")
	}
	for _, n := range cluster.Nodes {
		if !n.Running() {
			if err := cluster.Restart(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitSameDigest(ctx, t, cluster)
	seen := map[string]int{}
	for _, id := range ids {
		events, err := admin.Events(ctx, id)
		if err != nil {
			t.Fatalf("events of %s: %v", id, err)
		}
		for _, ev := range events {
			// "operator action replan by admin: forward-kill-0042"
			if i := strings.Index(ev.Message, "forward-kill-"); ev.Kind == shared.EventAction && i >= 0 {
				seen[ev.Message[i:]]++
			}
		}
	}
	for p, n := range seen {
		if n > 1 {
			t.Errorf("write %s was applied %d times", p, n)
		}
	}
	for p := range acked {
		if seen[p] == 0 {
			t.Errorf("acknowledged write %s is not in the state", p)
		}
	}
	t.Logf("%d of %d writes acknowledged (%d sent after the first kill), %d in the state",
		len(acked), writes, ackedAfterKill.Load(), len(seen))
}
