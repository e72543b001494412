package state

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/seal"
	"github.com/rivetmetal/rivet/shared"
)

func TestSealedSecretsOpenOnlyWithTheirKey(t *testing.T) {
	key, _ := seal.New()
	clear := Cluster{CACertPEM: "cert", CAKeyPEM: "the-ca-key", GossipKey: "the-gossip-key",
		TokenSecret: "the-token-secret", EnrolToken: "the-enrol-token", CreatedAt: time.Unix(1, 0).UTC()}
	s := New()
	s.UseSealKey(key)
	s.ApplyInitCluster(InitCluster{Cluster: SealCluster(key, clear)}, 1)
	if got := s.Cluster(); got != clear {
		t.Fatalf("Cluster() = %+v, want the secrets opened", got)
	}
	var buf bytes.Buffer
	snap := s.Snapshot()
	if err := snap.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"the-ca-key", "the-gossip-key", "the-token-secret", "the-enrol-token"} {
		if bytes.Contains(buf.Bytes(), []byte(secret)) {
			t.Errorf("the snapshot holds %q in clear", secret)
		}
	}

	// A store with another key restores the snapshot but opens nothing: empty secrets
	// (every consumer refuses an empty secret) and an error that says why.
	other, _ := seal.New()
	wrong := New()
	wrong.UseSealKey(other)
	var d Data
	if err := json.Unmarshal(buf.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	wrong.Restore(&d, snap.Applied)
	if c := wrong.Cluster(); c.TokenSecret != "" || c.CAKeyPEM != "" || wrong.SealError() == nil {
		t.Fatalf("another key: cluster %+v, error %v", c, wrong.SealError())
	}

	// A clear value where a sealed one belongs does not open either.
	strict := New()
	strict.UseSealKey(key)
	strict.ApplyInitCluster(InitCluster{Cluster: clear}, 1)
	if strict.Cluster().TokenSecret != "" || strict.SealError() == nil {
		t.Fatal("a clear token secret was accepted by a store that has a seal key")
	}
}

func TestSwarmTokensAreSealed(t *testing.T) {
	key, _ := seal.New()
	s := New()
	s.UseSealKey(key)
	s.data.Machines["m1"] = &shared.Machine{ID: "m1"}
	s.ApplySwarmClaim(SwarmClaim{ID: "m1"}, 1)
	rep := SwarmReport{ID: "m1", Report: shared.SwarmReport{NodeID: "n", ClusterID: "c", ManagerToken: "mgr-secret", WorkerToken: "wkr-secret"}}
	if res := out(s.ApplySwarmReport(SealSwarmReport(key, rep), 2)); res.Err != nil {
		t.Fatal(res.Err)
	}
	if sw := s.Swarm(); sw.ManagerToken != "mgr-secret" || sw.WorkerToken != "wkr-secret" {
		t.Fatalf("Swarm() = %+v", sw)
	}
	if s.data.Swarm.ManagerToken == "mgr-secret" || !seal.IsSealed(s.data.Swarm.WorkerToken) {
		t.Fatalf("stored in clear: %+v", s.data.Swarm)
	}
}
