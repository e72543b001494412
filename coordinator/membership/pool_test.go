package membership_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	agentmember "github.com/rivetmetal/rivet/agent/membership"
	"github.com/rivetmetal/rivet/coordinator/membership"
	"github.com/rivetmetal/rivet/internal/gossip"
	"github.com/rivetmetal/rivet/shared"
)

// These tests run real Serf members on loopback: one or two coordinator pools and
// several agent members (the agent side of the same protocol), with memberlist's LAN
// defaults, so the failure-detection time they print is the one a rack would see.

// call is one Recorder call.
type call struct {
	alive  bool
	id     shared.MachineID
	detail string // addr for alive, reason for lost
	at     time.Time
}

// recorder is a Recorder that remembers its calls; failFirst makes the first calls fail.
type recorder struct {
	mu        sync.Mutex
	calls     []call
	failFirst int
}

func (r *recorder) MachineAlive(_ context.Context, id shared.MachineID, addr string) error {
	return r.add(call{alive: true, id: id, detail: addr, at: time.Now()})
}

func (r *recorder) MachineLost(_ context.Context, id shared.MachineID, reason string) error {
	return r.add(call{id: id, detail: reason, at: time.Now()})
}

func (r *recorder) add(c call) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failFirst > 0 {
		r.failFirst--
		return errors.New("not now")
	}
	r.calls = append(r.calls, c)
	return nil
}

// wait waits for a call matching want that arrived after since, and returns it.
func (r *recorder) wait(t *testing.T, since time.Time, within time.Duration, want func(call) bool) call {
	t.Helper()
	var found call
	testenv.Eventually(t, within, "a matching Recorder call", func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, c := range r.calls {
			if !c.at.Before(since) && want(c) {
				found = c
				return nil
			}
		}
		return fmt.Errorf("calls: %+v", r.calls)
	})
	return found
}

func (r *recorder) callsFor(id shared.MachineID) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.calls {
		if c.id == id {
			out = append(out, c)
		}
	}
	return out
}

func newKey(t *testing.T) string {
	t.Helper()
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func startPool(t *testing.T, name, key string, rec membership.Recorder, log *slog.Logger) *membership.Pool {
	t.Helper()
	p, err := membership.Start(membership.Config{
		NodeName: name, BindAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:7443",
		Key: key, Recorder: rec, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown() })
	return p
}

func machineID(n int) shared.MachineID { return shared.MachineID(fmt.Sprintf("m-%016x", 0xa9e0+n)) }

func startAgent(t *testing.T, id shared.MachineID, key, bind string, join ...string) *agentmember.Member {
	t.Helper()
	m, err := agentmember.Start(agentmember.Config{
		ID: id, BindAddr: bind, Key: key,
		Tags: shared.Tags{State: shared.StateDiscovered, Version: "test"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	if len(join) > 0 {
		if _, err := m.Join(join); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func memberOf(p *membership.Pool, name string) (shared.SerfMember, bool) {
	for _, m := range p.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return shared.SerfMember{}, false
}

func TestPoolReportsAliveLostAndRejoin(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	rec := &recorder{}
	pool := startPool(t, "coord-1", key, rec, nil)
	start := time.Now()

	agents := map[shared.MachineID]*agentmember.Member{}
	for i := range 4 {
		id := machineID(i)
		agents[id] = startAgent(t, id, key, "127.0.0.1:0", pool.LocalAddr())
	}
	for id := range agents {
		c := rec.wait(t, start, 30*time.Second, func(c call) bool { return c.alive && c.id == id })
		if c.detail != "127.0.0.1" {
			t.Errorf("MachineAlive(%s) addr = %q, want 127.0.0.1", id, c.detail)
		}
	}
	if got := len(pool.Members()); got != 5 {
		t.Fatalf("Members() = %d entries, want 5: %+v", got, pool.Members())
	}

	// Kill one agent as a power cut would: no Leave.
	victim := machineID(2)
	port := portOf(t, agents[victim].LocalAddr())
	killed := time.Now()
	if err := agents[victim].Shutdown(); err != nil {
		t.Fatal(err)
	}
	lost := rec.wait(t, killed, 90*time.Second, func(c call) bool { return !c.alive && c.id == victim })
	if lost.detail != membership.ReasonFailed {
		t.Errorf("MachineLost reason = %q, want %q", lost.detail, membership.ReasonFailed)
	}
	secs := lost.at.Sub(killed).Seconds()
	t.Logf("failure detected after %.1fs", secs)
	fmt.Printf("rivet-figure: serf failure detection, 6 members on loopback, memberlist LAN defaults: %.1f s (kill to MachineLost)\n", secs)

	// The machine comes back (a reboot) on the same address.
	rejoined := time.Now()
	startAgent(t, victim, key, fmt.Sprintf("127.0.0.1:%d", port), pool.LocalAddr())
	rec.wait(t, rejoined, 30*time.Second, func(c call) bool { return c.alive && c.id == victim })
	t.Logf("rejoin reported after %.1fs", time.Since(rejoined).Seconds())

	// A graceful leave is reported with its own reason. Serf may see the member's
	// memberlist departure before its leave intent and say "failed" first; the intent
	// (gossiped, else synced by push/pull within 30s) turns it into "left".
	leaver := machineID(3)
	left := time.Now()
	if err := agents[leaver].Leave(); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, left, 60*time.Second, func(c call) bool {
		return !c.alive && c.id == leaver && c.detail == membership.ReasonLeft
	})
	t.Logf("leave reported after %.1fs", time.Since(left).Seconds())

	// Agents that stayed up were reported alive once: tag updates are not news.
	steady := machineID(0)
	if err := agents[steady].SetTags(shared.Tags{State: shared.StateProvisioning, Step: "wipe", Version: "test"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "tag update to reach the coordinator", testenv.Holds(func() bool {
		m, ok := memberOf(pool, string(steady))
		return ok && m.Tags.Step == "wipe"
	}, nil))
	if n := len(rec.callsFor(steady)); n != 1 {
		t.Errorf("steady agent got %d Recorder calls, want 1: %+v", n, rec.callsFor(steady))
	}
}

func portOf(t *testing.T, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestTagsRoundTrip(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	pool := startPool(t, "coord-1", key, &recorder{}, nil)
	id := machineID(7)
	agent := startAgent(t, id, key, "127.0.0.1:0", pool.LocalAddr())
	want := shared.Tags{Kind: shared.KindAgent, MachineID: id, State: shared.StateJoining,
		Step: "swarm-join", Version: "v1.2.3"}
	if err := agent.SetTags(want); err != nil {
		t.Fatal(err)
	}
	var got shared.SerfMember
	testenv.Eventually(t, 30*time.Second, "tags to arrive", testenv.Holds(func() bool {
		var ok bool
		got, ok = memberOf(pool, string(id))
		return ok && got.Tags == want
	}, nil))
	if got.Status != "alive" {
		t.Errorf("status %q, want alive", got.Status)
	}
	self, ok := memberOf(pool, "coord-1")
	if !ok || self.Tags.Kind != shared.KindCoordinator || self.Tags.API != "127.0.0.1:7443" {
		t.Errorf("coordinator's own member = %+v, want kind coordinator with api tag", self)
	}
	if err := agent.SetTags(shared.Tags{State: "bogus"}); err == nil {
		t.Error("SetTags accepted an unknown state")
	}
}

func TestNudgeReachesOnlyItsAgent(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	pool := startPool(t, "coord-1", key, &recorder{}, nil)
	var agents []*agentmember.Member
	for i := range 3 {
		agents = append(agents, startAgent(t, machineID(10+i), key, "127.0.0.1:0", pool.LocalAddr()))
	}
	testenv.Eventually(t, 30*time.Second, "all members alive", testenv.Holds(func() bool { return len(pool.Members()) == 4 }, nil))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pool.Nudge(ctx, machineID(11)); err != nil {
		t.Fatalf("Nudge: %v", err)
	}
	select {
	case <-agents[1].Nudges():
	case <-time.After(10 * time.Second):
		t.Fatal("the nudged agent got no nudge")
	}
	// The other agents drop the query on its filter. Watch them for the query's whole
	// lifetime (Serf's default query timeout for this pool size), by which time it has
	// been gossiped to every member.
	watch := time.After(4 * time.Second)
	for done := false; !done; {
		select {
		case <-agents[0].Nudges():
			t.Fatal("agent 0 received a nudge meant for agent 1")
		case <-agents[2].Nudges():
			t.Fatal("agent 2 received a nudge meant for agent 1")
		case <-watch:
			done = true
		}
	}
	if err := pool.Nudge(ctx, machineID(99)); !errors.Is(err, membership.ErrNotMember) {
		t.Errorf("Nudge(unknown) = %v, want ErrNotMember", err)
	}
}

func TestMemberWithoutKeyIsRefused(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	rec := &recorder{}
	pool := startPool(t, "coord-1", key, rec, nil)

	// A plain Serf member with no key at all.
	conf := serf.DefaultConfig()
	conf.NodeName = string(machineID(20))
	conf.Tags = shared.Tags{Kind: shared.KindAgent, MachineID: machineID(20)}.Map()
	conf.MemberlistConfig = memberlist.DefaultLANConfig()
	conf.MemberlistConfig.BindAddr, conf.MemberlistConfig.BindPort = "127.0.0.1", 0
	conf.MemberlistConfig.Logger = quietLogger()
	conf.Logger = quietLogger()
	conf.LogOutput = nil
	plain, err := serf.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Shutdown() })
	if _, err := plain.Join([]string{pool.LocalAddr()}, true); err == nil {
		t.Error("a member without the gossip key joined the pool")
	}

	// An agent with another pool's key.
	other, err := agentmember.Start(agentmember.Config{ID: machineID(21), BindAddr: "127.0.0.1:0", Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Shutdown() })
	if _, err := other.Join([]string{pool.LocalAddr()}); err == nil {
		t.Error("a member with the wrong gossip key joined the pool")
	}

	if got := pool.Members(); len(got) != 1 {
		t.Errorf("pool has %d members, want only itself: %+v", len(got), got)
	}
	if plain.NumNodes() != 1 {
		t.Errorf("the keyless member sees %d nodes, want 1", plain.NumNodes())
	}
	if c := append(rec.callsFor(machineID(20)), rec.callsFor(machineID(21))...); len(c) != 0 {
		t.Errorf("Recorder heard of refused members: %+v", c)
	}
}

func quietLogger() *log.Logger { return log.New(io.Discard, "", 0) }

func TestMembersWithBadTagsAreIgnoredAndLoggedOnce(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	rec := &recorder{}
	var logs testenv.LogBuffer
	pool := startPool(t, "coord-1", key, rec, slog.New(slog.NewTextHandler(&logs, nil)))

	raw, err := gossip.DecodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	conf := serf.DefaultConfig()
	conf.NodeName = "stranger"
	conf.Tags = map[string]string{"role": "web"}
	conf.MemberlistConfig = memberlist.DefaultLANConfig()
	conf.MemberlistConfig.BindAddr, conf.MemberlistConfig.BindPort = "127.0.0.1", 0
	conf.MemberlistConfig.SecretKey = raw
	conf.MemberlistConfig.Logger = quietLogger()
	conf.Logger = quietLogger()
	conf.LogOutput = nil
	stranger, err := serf.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stranger.Shutdown() })
	if _, err := stranger.Join([]string{pool.LocalAddr()}, true); err != nil {
		t.Fatal(err)
	}
	// A second event from the same member: a tag update.
	if err := stranger.SetTags(map[string]string{"role": "db"}); err != nil {
		t.Fatal(err)
	}
	// Then an agent, whose join event comes after the stranger's.
	id := machineID(30)
	startAgent(t, id, key, "127.0.0.1:0", pool.LocalAddr())
	rec.wait(t, time.Time{}, 30*time.Second, func(c call) bool { return c.id == id })
	testenv.Eventually(t, 30*time.Second, "the stranger's tag update to arrive", testenv.Holds(func() bool {
		for _, m := range stranger.Members() {
			if m.Name == "stranger" {
				return m.Tags["role"] == "db"
			}
		}
		return false
	}, nil))

	if _, ok := memberOf(pool, "stranger"); ok {
		t.Error("Members() lists a member whose tags do not parse")
	}
	if n := strings.Count(logs.String(), "ignoring gossip member"); n != 1 {
		t.Errorf("bad tags logged %d times, want once:\n%s", n, logs.String())
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, c := range rec.calls {
		if c.id != id {
			t.Errorf("Recorder called for a member with bad tags: %+v", c)
		}
	}
}

func TestRecorderErrorsAreRetriedAndReconcileReplays(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	rec := &recorder{failFirst: 2}
	pool := startPool(t, "coord-1", key, rec, nil)
	id := machineID(40)
	startAgent(t, id, key, "127.0.0.1:0", pool.LocalAddr())
	rec.wait(t, time.Time{}, 30*time.Second, func(c call) bool { return c.alive && c.id == id })

	before := time.Now()
	if n := pool.Reconcile(); n != 1 {
		t.Errorf("Reconcile queued %d hints, want 1", n)
	}
	rec.wait(t, before, 10*time.Second, func(c call) bool { return c.alive && c.id == id })
}

func TestGossipAddrsListsCoordinators(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	a := startPool(t, "coord-a", key, &recorder{}, nil)
	b := startPool(t, "coord-b", key, &recorder{}, nil)
	if _, err := b.Join([]string{a.LocalAddr(), b.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	startAgent(t, machineID(50), key, "127.0.0.1:0", b.LocalAddr())
	testenv.Eventually(t, 30*time.Second, "both coordinators to see each other and the agent", testenv.Holds(func() bool {
		return len(a.Members()) == 3 && len(b.Members()) == 3
	}, nil))
	got := a.GossipAddrs()
	if len(got) != 2 || !contains(got, a.LocalAddr()) || !contains(got, b.LocalAddr()) {
		t.Errorf("GossipAddrs() = %v, want %s and %s", got, a.LocalAddr(), b.LocalAddr())
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestKeys(t *testing.T) {
	key := newKey(t)
	raw, err := gossip.DecodeKey(key)
	if err != nil || len(raw) != gossip.KeySize {
		t.Fatalf("DecodeKey(GenerateKey()) = %d bytes, %v", len(raw), err)
	}
	if other := newKey(t); other == key {
		t.Error("two generated keys are equal")
	}
	short := "c2hvcnQta2V5" // "short-key"
	for _, bad := range []string{"", "not base64!", short} {
		_, err := gossip.DecodeKey(bad)
		if err == nil {
			t.Errorf("DecodeKey(%q) accepted", bad)
			continue
		}
		if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("DecodeKey error echoes the key: %v", err)
		}
	}
	_, err = membership.Start(membership.Config{NodeName: "coord-1", BindAddr: "127.0.0.1:0", APIAddr: "x:1", Recorder: &recorder{}})
	if err == nil {
		t.Error("Start without a key succeeded: the pool must always be encrypted")
	}
}
