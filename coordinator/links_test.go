package coordinator_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/fsm"
	"github.com/rivetmetal/rivet/coordinator/pki"
	"github.com/rivetmetal/rivet/coordinator/raftlink"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

func startSolo(t *testing.T, dir string) *coordinatortest.InProcess {
	t.Helper()
	p, err := coordinatortest.StartInProcess(context.Background(), dir, slog.New(slog.NewTextHandler(testWriter{t}, nil)), coordinator.DaemonConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func raftAddr(t *testing.T, p *coordinatortest.InProcess) raft.ServerAddress {
	t.Helper()
	peers := p.Server.Members().Raft
	if len(peers) != 1 {
		t.Fatalf("raft peers %+v", peers)
	}
	return raft.ServerAddress(peers[0].Address)
}

// injectToken is the attack: pose as a leader of a later term and append one PutToken
// command for an admin token whose secret the attacker knows, committing it at once.
// It first probes the node for its term and last index (a heartbeat of term 0, which a
// plain transport answers).
func injectToken(t *testing.T, trans *raft.NetworkTransport, target raft.ServerAddress, tokenID string) error {
	t.Helper()
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("evil"), Addr: []byte(trans.LocalAddr())}
	var probe raft.AppendEntriesResponse
	probeErr := trans.AppendEntries("solo", target, &raft.AppendEntriesRequest{RPCHeader: hdr}, &probe)
	sum := sha256.Sum256([]byte("attacker-knows-this"))
	cmd, err := fsm.Encode(state.PutToken{Token: state.Token{ID: tokenID, Name: "evil", Role: shared.TokenAdmin,
		SecretHash: hex.EncodeToString(sum[:]), CreatedAt: time.Now().UTC()}})
	if err != nil {
		t.Fatal(err)
	}
	term := probe.Term + 1
	req := &raft.AppendEntriesRequest{RPCHeader: hdr, Term: term, PrevLogEntry: probe.LastLog, PrevLogTerm: probe.Term,
		Entries:           []*raft.Log{{Index: probe.LastLog + 1, Term: term, Type: raft.LogCommand, Data: cmd}},
		LeaderCommitIndex: probe.LastLog + 1}
	var resp raft.AppendEntriesResponse
	if err := trans.AppendEntries("solo", target, req, &resp); err != nil {
		return err
	}
	if probeErr != nil {
		return probeErr
	}
	t.Logf("the node answered the attack: %+v", resp)
	return nil
}

// assertNotInjected waits a little for the injected token to apply, as it would through
// an open transport, and fails if it did or if the token list changed.
func assertNotInjected(t *testing.T, p *coordinatortest.InProcess, tokenID string, before []shared.TokenInfo) {
	t.Helper()
	// Not a wait for a condition: watching for something that must not happen, over the
	// time an open transport would take to apply it.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok := p.Server.Store().Token(tokenID); ok {
			t.Fatalf("the injected token %s was committed", tokenID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	after, err := p.Client(p.AdminToken).Tokens(context.Background())
	if err != nil {
		t.Fatalf("the cluster no longer answers: %v", err)
	}
	if !slices.EqualFunc(before, after, func(a, b shared.TokenInfo) bool { return a.ID == b.ID }) {
		t.Fatalf("token list changed: before %v, after %v", before, after)
	}
}

// attackerLayer is a raftlink that presents cert and trusts the cluster CA.
func attackerLayer(t *testing.T, cert *tls.Certificate, roots *x509.CertPool) *raft.NetworkTransport {
	t.Helper()
	l, err := raftlink.Listen(raftlink.Config{Listen: "127.0.0.1:0", Roots: roots,
		Certificate: func() (*tls.Certificate, error) { return cert, nil },
		Member:      func(string) bool { return true }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransport(l, 1, 2*time.Second, io.Discard)
	t.Cleanup(func() { trans.Close() })
	return trans
}

func nodeCert(t *testing.T, ca pki.CA, id string) *tls.Certificate {
	t.Helper()
	key, _ := pki.NewNodeKey()
	csr, err := pki.NodeCSR(key, id, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.IssueNode(csr, id, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.NodeCertificate(certPEM, key)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestRaftPortRefusesAttackers: the attack that committed a token through the Raft port
// fails for a plain TCP client, a client with another CA's certificate, and a client with
// a genuine cluster certificate for a node that is not in the Raft configuration.
func TestRaftPortRefusesAttackers(t *testing.T) {
	p := startSolo(t, t.TempDir())
	target := raftAddr(t, p)
	before, err := p.Client(p.AdminToken).Tokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	caPEM := p.Server.Store().Cluster().CACertPEM
	roots, _ := pki.CA{CertPEM: caPEM}.Pool()

	t.Run("plain TCP, no certificate", func(t *testing.T) {
		plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		if err := injectToken(t, plain, target, "evil1"); err == nil {
			t.Error("a plain hashicorp/raft transport's AppendEntries was answered")
		}
		assertNotInjected(t, p, "evil1", before)
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other, _ := pki.NewCA("Rivet cluster CA", time.Now())
		trans := attackerLayer(t, nodeCert(t, other, "solo"), roots)
		if err := injectToken(t, trans, target, "evil2"); err == nil {
			t.Error("a peer with another CA's certificate was answered")
		}
		assertNotInjected(t, p, "evil2", before)
	})
	t.Run("cluster certificate, not a member", func(t *testing.T) {
		// Obtained the way a joiner gets one: an admin certified it, but it never joined.
		key, _ := pki.NewNodeKey()
		csr, _ := pki.NodeCSR(key, "intruder", []string{"127.0.0.1"})
		resp, err := p.Client(p.AdminToken).Certify(context.Background(), &shared.CertifyRequest{ID: "intruder", CSR: csr})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := pki.CA{CertPEM: resp.CACert}.NodeCertificate(resp.NodeCert, key)
		if err != nil {
			t.Fatal(err)
		}
		trans := attackerLayer(t, cert, roots)
		if err := injectToken(t, trans, target, "evil3"); err == nil {
			t.Error("a non-member with a cluster certificate was answered")
		}
		assertNotInjected(t, p, "evil3", before)
		// The same certificate does not open the forwarding endpoint either.
		if st := postInternalApply(t, p, cert); st != http.StatusForbidden {
			t.Errorf("internal apply with a non-member's certificate: HTTP %d, want 403", st)
		}
	})
	t.Run("internal token without a certificate", func(t *testing.T) {
		if st := postInternalApply(t, p, nil); st != http.StatusForbidden {
			t.Errorf("internal apply with the internal token but no certificate: HTTP %d, want 403", st)
		}
		assertNotInjected(t, p, "evil4", before)
	})
	metrics := scrape(t, p)
	for _, reason := range []string{"handshake", "not a member", "api"} {
		if !strings.Contains(metrics, `rivet_link_refused_total{reason="`+reason+`"}`) {
			t.Errorf("no refusal counted for reason %q", reason)
		}
	}
}

// postInternalApply forwards a PutToken the way a follower does, with the real internal
// token, presenting cert (none when nil), and returns the HTTP status.
func postInternalApply(t *testing.T, p *coordinatortest.InProcess, cert *tls.Certificate) int {
	t.Helper()
	tlsCfg, err := shared.PinnedTLSConfig(p.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if cert != nil {
		tlsCfg.Certificates = []tls.Certificate{*cert}
	}
	sum := sha256.Sum256([]byte("x"))
	cmd, _ := fsm.Encode(state.PutToken{Token: state.Token{ID: "evil4", Name: "evil", Role: shared.TokenAdmin,
		SecretHash: hex.EncodeToString(sum[:])}})
	body, _ := json.Marshal(map[string][][]byte{"commands": {cmd}})
	req, _ := http.NewRequest(http.MethodPost, p.URL+shared.PathInternalApply, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+auth.InternalToken(p.Server.Store().Cluster().TokenSecret))
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAPIOffersAEADOnlyOnTLS12: the API refuses a TLS 1.2 client that offers only CBC-SHA1.
func TestAPIOffersAEADOnlyOnTLS12(t *testing.T) {
	p := startSolo(t, t.TempDir())
	addr := p.URL[len("https://"):]
	dial := func(suite uint16) error {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256); err != nil {
		t.Fatalf("TLS 1.2 with ChaCha20-Poly1305: %v", err)
	}
	if err := dial(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA); err == nil {
		t.Fatal("TLS 1.2 with AES-CBC-SHA1 was accepted")
	}
}

// TestCertifyNeedsAnAdminAndAMatchingCSR: the join's certificate (and the seal key with
// it) goes only to an admin token, for a CSR that names the id asked for.
func TestCertifyNeedsAnAdminAndAMatchingCSR(t *testing.T) {
	p := startSolo(t, t.TempDir())
	ctx := context.Background()
	key, _ := pki.NewNodeKey()
	csr, _ := pki.NodeCSR(key, "c2", []string{"127.0.0.1"})
	viewer, err := p.Client(p.AdminToken).CreateToken(ctx, &shared.TokenRequest{Name: "v", Role: shared.TokenViewer})
	if err != nil {
		t.Fatal(err)
	}
	for name, token := range map[string]string{"no token": "", "enrol token": p.EnrolToken, "viewer token": viewer.Secret,
		"internal token": auth.InternalToken(p.Server.Store().Cluster().TokenSecret)} {
		resp, err := p.Client(token).Certify(ctx, &shared.CertifyRequest{ID: "c2", CSR: csr})
		if err == nil || resp != nil {
			t.Errorf("%s: certified (%v)", name, err)
		} else if st := shared.StatusOf(err); st != http.StatusUnauthorized && st != http.StatusForbidden {
			t.Errorf("%s: HTTP %d, want 401 or 403", name, st)
		}
	}
	if _, err := p.Client(p.AdminToken).Certify(ctx, &shared.CertifyRequest{ID: "c3", CSR: csr}); shared.StatusOf(err) != http.StatusBadRequest {
		t.Errorf("a CSR for c2 asked as c3: %v, want 400", err)
	}
	resp, err := p.Client(p.AdminToken).Certify(ctx, &shared.CertifyRequest{ID: "c2", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.CA{CertPEM: resp.CACert}.NodeCertificate(resp.NodeCert, key)
	if err != nil || pki.NodeID(cert.Leaf) != "c2" {
		t.Fatalf("certificate for c2: %v", err)
	}
}
