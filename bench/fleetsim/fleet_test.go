package fleetsim

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestFleetReachesReady runs 30 simulated machines, 10 of them gossiping, against a real
// in-process coordinator: every machine registers once, runs its RAM steps, reboots into
// service mode, joins the swarm and ends ready, with every acknowledged step result on
// record and exactly one swarm creator.
func TestFleetReachesReady(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dc := coordinator.DaemonConfig{Plan: coordinator.PlanOptions{Settle: 300 * time.Millisecond, MaxWait: 2 * time.Second}}
	co, err := coordinatortest.StartInProcess(ctx, t.TempDir(), slog.New(slog.DiscardHandler), dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(co.Stop)
	admin := co.Client(co.AdminToken)
	if _, err := admin.ApplyRoles(ctx, &shared.RoleList{Roles: []shared.Role{Role()}}, false); err != nil {
		t.Fatal(err)
	}
	const n, gossiping = 30, 10
	f, err := New(Config{URLs: []string{co.URL}, CAFingerprint: co.Fingerprint, EnrolToken: co.EnrolToken,
		Machines: n, Racks: 3, PollInterval: 500 * time.Millisecond, JournalDir: t.TempDir(),
		Durations: DefaultDurations().Scaled(0.02),
		Addr: func(i int) (string, string) {
			if i < gossiping {
				return "127.0.0.1", "127.0.0.1:0"
			}
			return "127.0.0.1", ""
		},
		PowerOn: func(i int) time.Duration { return time.Duration(i) * 10 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ImportExpected(ctx, f.Expected()); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.Run(runCtx); close(done) }()
	defer func() { stop(); <-done }()

	testenv.Eventually(t, 50*time.Second, fmt.Sprintf("all %d machines ready", n), testenv.Holds(
		func() bool { return f.Ready() == n },
		func() string {
			ms, _ := admin.Machines(ctx)
			return fmt.Sprintf("%d ready; failures %v; coordinator says %+v", f.Ready(), f.Stats().Summary().FirstError, ms)
		}))
	ms, err := admin.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != n {
		t.Fatalf("coordinator lists %d machines, want %d (duplicates or losses)", len(ms), n)
	}
	for _, sim := range f.Machines() {
		rec, err := admin.Machine(ctx, sim.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != shared.StateReady {
			t.Errorf("machine %d (%s) is %s, want ready", sim.Index, sim.ID, rec.State)
		}
		for name, acked := range sim.Acked() {
			for _, st := range rec.Steps {
				if st.Name == name && st.Status != acked {
					t.Errorf("machine %s step %s: acknowledged %s, recorded %s", sim.ID, name, acked, st.Status)
				}
			}
		}
	}
	if got := f.Stats().Count(MilestoneGossip); got != gossiping {
		t.Errorf("%d machines joined gossip, want %d", got, gossiping)
	}
	sum := f.Stats().Summary()
	if sum.Routes["progress"].Calls == 0 || sum.Routes["setboot"].Calls != n || sum.Routes["swarm_report"].Calls != n {
		t.Errorf("API calls by route do not match a full run: %+v", sum.Routes)
	}
}
