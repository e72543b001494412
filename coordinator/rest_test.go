package coordinator_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestNoSecretInClearAtRest: with a machine, tokens and Swarm tokens in the state, neither
// raft.db nor a snapshot holds any of the cluster's secrets in clear.
func TestNoSecretInClearAtRest(t *testing.T) {
	dir := t.TempDir()
	p := startSolo(t, dir)
	ctx := context.Background()
	admin := p.Client(p.AdminToken)
	reg, err := p.Client(p.EnrolToken).Register(ctx, coordinatortest.RegisterRequest(1))
	if err != nil {
		t.Fatal(err)
	}
	created, err := admin.CreateToken(ctx, &shared.TokenRequest{Name: "ops", Role: shared.TokenAdmin})
	if err != nil {
		t.Fatal(err)
	}
	id := reg.Machine.ID
	if _, err := p.Server.Apply(ctx, state.SwarmClaim{ID: id}); err != nil {
		t.Fatal(err)
	}
	const managerToken, workerToken = "SWMTKN-1-managersecretmanagersecret", "SWMTKN-1-workersecretworkersecret"
	rep := state.SwarmReport{ID: id, Time: time.Now().UTC(), Report: shared.SwarmReport{NodeID: "n1", ClusterID: "swarm1",
		Addr: "10.0.0.1:2377", ManagerToken: managerToken, WorkerToken: workerToken}}
	if _, err := p.Server.Apply(ctx, rep); err != nil {
		t.Fatalf("swarm report: %v", err)
	}
	if sw := p.Server.Store().Swarm(); sw.ManagerToken != managerToken || sw.WorkerToken != workerToken {
		t.Fatalf("the store does not open the swarm tokens: %+v", sw)
	}
	if _, err := admin.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}

	cl := p.Server.Store().Cluster()
	secrets := map[string]string{
		"CA key":         pemBody(t, cl.CAKeyPEM),
		"token secret":   cl.TokenSecret,
		"gossip key":     cl.GossipKey,
		"enrol token":    p.EnrolToken,
		"manager token":  managerToken,
		"worker token":   workerToken,
		"machine token":  reg.MachineToken,
		"admin token":    p.AdminToken,
		"new admin":      created.Secret,
		"enrol (stored)": cl.EnrolToken,
	}
	for name, v := range secrets {
		if len(v) < 16 {
			t.Fatalf("guard: the %s to look for is %q: the grep would prove nothing", name, v)
		}
	}
	files := append([]string{filepath.Join(dir, "raft.db")}, snapshotFiles(t, dir)...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			t.Fatalf("guard: %s is empty", f)
		}
		if filepath.Base(f) != "meta.json" {
			// Guard: the file does hold the state, in a form this grep can read.
			for _, want := range []string{"sim-00001", "swarm1", "rvs1:"} {
				if !bytes.Contains(data, []byte(want)) {
					t.Fatalf("guard: %s does not contain %q: the grep does not see the state", f, want)
				}
			}
		}
		for name, v := range secrets {
			if bytes.Contains(data, []byte(v)) {
				t.Errorf("%s holds the %s in clear", f, name)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bootstrap-ca.key")); !os.IsNotExist(err) {
		t.Errorf("the bootstrap copy of the CA key is still there after initialisation (%v)", err)
	}
}

// pemBody is the first line of a PEM's base64 body: what raft.db would hold of it.
func pemBody(t *testing.T, p string) string {
	t.Helper()
	if block, _ := pem.Decode([]byte(p)); block == nil {
		t.Fatalf("guard: the CA key %q is not PEM", p)
	}
	lines := strings.Split(p, "\n")
	return lines[1]
}

// snapshotFiles lists DIR/snapshots/*/*, failing if there is no snapshot.
func snapshotFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "snapshots", "*", "*"))
	if err != nil || len(files) < 2 {
		t.Fatalf("guard: no snapshot files in %s (%v)", dir, err)
	}
	return files
}

// TestDataDirIsPrivate: a data dir that existed as 0755 is 0700 after start (and after a
// restart), snapshots are 0700/0600, and the identity files are 0600 and reused.
func TestDataDirIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := coordinatortest.StartInProcess(context.Background(), dir, slog.New(slog.NewTextHandler(io.Discard, nil)), coordinator.DaemonConfig{})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			p.Stop()
		}
	}()
	if _, err := p.Client(p.AdminToken).Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertMode(t, dir, 0o700)
	for _, f := range []string{"raft.db", "seal.key", "node.pem", "ca.crt", "operator.env"} {
		assertMode(t, filepath.Join(dir, f), 0o600)
	}
	assertMode(t, filepath.Join(dir, "snapshots"), 0o700)
	for _, f := range snapshotFiles(t, dir) {
		assertMode(t, filepath.Dir(f), 0o700)
		assertMode(t, f, 0o600)
	}
	serial, fp, enrol := servedSerial(t, p), p.Fingerprint, p.Server.Store().Cluster().EnrolToken
	p.Stop()
	stopped = true

	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	again := startSolo(t, dir)
	assertMode(t, dir, 0o700)
	if got := again.Server.CAFingerprint(); got != fp {
		t.Errorf("after a restart the CA is %s, was %s", got, fp)
	}
	if got := servedSerial(t, again); got != serial {
		t.Errorf("after a restart the node certificate changed (serial %s, was %s): the files were not reused", got, serial)
	}
	if got := again.Server.Store().Cluster().EnrolToken; got != enrol {
		t.Errorf("after a restart the enrolment token opens to %q, was %q", got, enrol)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o, want %o", path, got, want)
	}
}

// servedSerial is the serial of the certificate the API serves now.
func servedSerial(t *testing.T, p *coordinatortest.InProcess) string {
	t.Helper()
	c, err := tls.Dial("tcp", strings.TrimPrefix(p.URL, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestNodeCertificateRenewsWithoutRestart: with a short lifetime, the served certificate
// is replaced by a fresh one before it expires, and the new one is kept on disk.
func TestNodeCertificateRenewsWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	p, err := coordinatortest.StartInProcess(context.Background(), dir, slog.New(slog.NewTextHandler(io.Discard, nil)),
		coordinator.DaemonConfig{Server: coordinator.Config{CertLifetime: 4 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	first := servedLeaf(t, p)
	var next *x509.Certificate
	testenv.Eventually(t, 20*time.Second, "the certificate to be renewed", func() error {
		next = servedLeaf(t, p)
		if next.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("still the first certificate, valid until %v", first.NotAfter)
		}
		return nil
	})
	if !next.NotAfter.After(first.NotAfter) || time.Now().After(next.NotAfter) {
		t.Fatalf("renewed certificate valid until %v, the old one until %v", next.NotAfter, first.NotAfter)
	}
	// The cluster still answers with the renewed certificate, and writes still commit.
	if _, err := p.Client(p.AdminToken).CreateToken(context.Background(), &shared.TokenRequest{Name: "after-renewal", Role: shared.TokenViewer}); err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, "node.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(onDisk)
	if block == nil || bytes.Equal(block.Bytes, first.Raw) {
		t.Error("node.pem still holds the first certificate")
	}
}

func servedLeaf(t *testing.T, p *coordinatortest.InProcess) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", strings.TrimPrefix(p.URL, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}
