package raftlink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/pki"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// testCA is a cluster CA that issues node certificates.
type testCA struct {
	ca    pki.CA
	roots *x509.CertPool
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	ca, err := pki.NewCA("test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots, err := ca.Pool()
	if err != nil {
		t.Fatal(err)
	}
	return testCA{ca: ca, roots: roots}
}

func (c testCA) node(t *testing.T, id string) *tls.Certificate {
	t.Helper()
	key, err := pki.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NodeCSR(key, id, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.ca.IssueNode(csr, id, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.ca.NodeCertificate(certPEM, key)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// refusals records what a layer refused.
type refusals struct {
	mu      sync.Mutex
	reasons []string
}

func (r *refusals) add(reason string) {
	r.mu.Lock()
	r.reasons = append(r.reasons, reason)
	r.mu.Unlock()
}

// waitFor waits until a refusal whose reason contains reason has been recorded.
func (r *refusals) waitFor(t *testing.T, reason string) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, "a refusal "+reason, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if got := strings.Join(r.reasons, ","); !strings.Contains(got, reason) {
			return fmt.Errorf("refusals so far: %q", got)
		}
		return nil
	})
}

func listen(t *testing.T, cert *tls.Certificate, roots *x509.CertPool, members ...string) (*Layer, *refusals) {
	t.Helper()
	ref := &refusals{}
	l, err := Listen(Config{Listen: "127.0.0.1:0", Roots: roots, Refused: ref.add,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Certificate: func() (*tls.Certificate, error) { return cert, nil },
		Member: func(id string) bool {
			for _, m := range members {
				if m == id {
					return true
				}
			}
			return false
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, ref
}

// exchange dials from a to b, writes a line and reads it back on b's side.
func exchange(t *testing.T, from, to *Layer) error {
	t.Helper()
	c, err := from.Dial(rAddr(to), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	accepted := make(chan error, 1)
	go func() {
		s, err := to.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer s.Close()
		buf := make([]byte, 5)
		_, err = io.ReadFull(s, buf)
		if err == nil && string(buf) != "ping\n" {
			err = errors.New("garbled")
		}
		accepted <- err
	}()
	select {
	case err := <-accepted:
		return err
	case <-time.After(3 * time.Second):
		return errors.New("the server never accepted the connection")
	}
}

func TestMembersTalk(t *testing.T) {
	ca := newTestCA(t)
	a, _ := listen(t, ca.node(t, "c1"), ca.roots, "c1", "c2")
	b, _ := listen(t, ca.node(t, "c2"), ca.roots, "c1", "c2")
	if err := exchange(t, a, b); err != nil {
		t.Fatalf("members could not talk: %v", err)
	}
}

// acceptNone fails the test if to hands any connection to Raft within a short wait.
func acceptNone(t *testing.T, to *Layer) {
	t.Helper()
	got := make(chan struct{}, 1)
	go func() {
		if c, err := to.Accept(); err == nil {
			c.Close()
			got <- struct{}{}
		}
	}()
	select {
	case <-got:
		t.Fatal("a refused peer's connection reached Raft")
	case <-time.After(300 * time.Millisecond):
	}
}

func TestPeerWithoutCertificateIsRefused(t *testing.T) {
	ca := newTestCA(t)
	srv, ref := listen(t, ca.node(t, "c1"), ca.roots, "c1")
	c, err := tls.Dial("tcp", srv.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		_, _ = c.Write([]byte("x"))
		_, err = c.Read(make([]byte, 1)) // TLS 1.3: the server's verdict arrives after the client's Finished
		c.Close()
	}
	if err == nil {
		t.Fatal("a peer without a certificate was served")
	}
	ref.waitFor(t, "handshake")
	acceptNone(t, srv)
}

// A peer whose certificate is from another CA, or from the cluster CA but for a name
// that is not a member, is refused at the handshake and never reaches Raft.
func TestPeersOutsideTheClusterAreRefused(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	for name, tt := range map[string]struct {
		cert *tls.Certificate
		log  string
	}{
		// The intruder trusts the cluster CA (it knows its certificate) and names a member.
		"another CA": {other.node(t, "c2"), "handshake"},
		"non-member": {ca.node(t, "c9"), "not a member"},
	} {
		t.Run(name, func(t *testing.T) {
			srv, ref := listen(t, ca.node(t, "c1"), ca.roots, "c1", "c2")
			intruder, _ := listen(t, tt.cert, ca.roots, "c1")
			if err := exchange(t, intruder, srv); err == nil {
				t.Fatalf("a certificate from %s was accepted", name)
			}
			ref.waitFor(t, tt.log)
			acceptNone(t, srv)
		})
	}
}

func TestDialRefusesAServerThatIsNotAMember(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	client, ref := listen(t, ca.node(t, "c1"), ca.roots, "c1", "c2")
	for name, srvCert := range map[string]*tls.Certificate{"another CA": other.node(t, "c2"), "non-member": ca.node(t, "c9")} {
		srv, _ := listen(t, srvCert, ca.roots, "c1")
		if _, err := client.Dial(rAddr(srv), time.Second); err == nil {
			t.Fatalf("%s: dial accepted the server", name)
		}
	}
	ref.waitFor(t, "certificate")
	ref.waitFor(t, "not a member")
}

func rAddr(l *Layer) raft.ServerAddress { return raft.ServerAddress(l.Addr().String()) }

// TestTLS12OffersAEADOnly: a member that speaks TLS 1.2 with an AEAD suite gets in; one
// that offers only CBC-SHA1 does not, certificate or not.
func TestTLS12OffersAEADOnly(t *testing.T) {
	ca := newTestCA(t)
	srv, _ := listen(t, ca.node(t, "c1"), ca.roots, "c1", "c2")
	member := ca.node(t, "c2")
	dial := func(suite uint16) error {
		c, err := tls.Dial("tcp", srv.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{suite}, Certificates: []tls.Certificate{*member}})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256); err != nil {
		t.Fatalf("TLS 1.2 with AES-GCM: %v", err)
	}
	if err := dial(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA); err == nil {
		t.Fatal("TLS 1.2 with AES-CBC-SHA1 was accepted")
	}
}
