package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/bench/fleetsim"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestClusterKeepsNoSecretInClear runs three real coordinators (linked over mutual TLS)
// and a small simulated fleet to ready, so the state holds machines, tokens and the Swarm
// join tokens; then it greps every coordinator's raft.db and snapshots for the secrets it
// can know from outside. The in-process TestNoSecretInClearAtRest also covers the CA key
// and the token secret, which never leave a coordinator.
func TestClusterKeepsNoSecretInClear(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cluster := startCluster(ctx, t, coordinatortest.Options{Dir: t.TempDir(), Nodes: 3,
		ExtraArgs: []string{"--plan-settle", "300ms", "--plan-max-wait", "2s"}})
	admin := cluster.Client()
	if _, err := admin.ApplyRoles(ctx, &shared.RoleList{Roles: []shared.Role{fleetsim.Role()}}, false); err != nil {
		t.Fatal(err)
	}
	created, err := admin.CreateToken(ctx, &shared.TokenRequest{Name: "ops", Role: shared.TokenAdmin})
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	fleet, err := fleetsim.New(fleetsim.Config{URLs: cluster.URLs(), CAFingerprint: cluster.Fingerprint,
		EnrolToken: cluster.EnrolToken, Machines: n, Racks: 3, PollInterval: 300 * time.Millisecond,
		JournalDir: t.TempDir(), Durations: fleetsim.DefaultDurations().Scaled(0.01),
		Addr:    func(int) (string, string) { return "127.0.0.1", "" },
		PowerOn: func(i int) time.Duration { return time.Duration(i) * 10 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { fleet.Run(runCtx); close(done) }()
	testenv.Eventually(t, 3*time.Minute, fmt.Sprintf("%d machines ready", n), func() error {
		if ready := fleet.Ready(); ready < n {
			return fmt.Errorf("%d of %d ready; first error %v", ready, n, fleet.Stats().Summary().FirstError)
		}
		return nil
	})
	stop()
	<-done
	gossip, err := admin.Gossip(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range cluster.Nodes {
		if _, err := cluster.Client(node).Snapshot(ctx); err != nil {
			t.Fatalf("snapshot on %s: %v", node.ID, err)
		}
	}

	// The fleet simulator's swarm creator reports these tokens (fleetsim/executors.go).
	secrets := map[string]string{"gossip key": gossip.Key, "enrol token": cluster.EnrolToken,
		"admin token": cluster.AdminToken, "new admin token": created.Secret,
		"swarm manager token": "SWMTKN-1-sim-manager", "swarm worker token": "SWMTKN-1-sim-worker"}
	for name, v := range secrets {
		if len(v) < 16 {
			t.Fatalf("guard: the %s to look for is %q", name, v)
		}
	}
	machine := string(fleet.Machines()[0].ID)
	for _, node := range cluster.Nodes {
		snaps, _ := filepath.Glob(filepath.Join(node.DataDir, "snapshots", "*", "state.bin"))
		if len(snaps) == 0 {
			t.Fatalf("guard: %s has no snapshot", node.ID)
		}
		for _, f := range append([]string{filepath.Join(node.DataDir, "raft.db")}, snaps...) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{machine, "rvs1:"} { // guard: the grep sees the state
				if !bytes.Contains(data, []byte(want)) {
					t.Fatalf("guard: %s (%d bytes) does not contain %q", f, len(data), want)
				}
			}
			for name, v := range secrets {
				if bytes.Contains(data, []byte(v)) {
					t.Errorf("%s holds the %s in clear", f, name)
				}
			}
		}
	}
}
