package shared

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a self-made certificate authority, as a coordinator makes one at first start.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// serverCert issues a leaf for 127.0.0.1 and returns it with the given chain after it.
func (ca *testCA) serverCert(t *testing.T, usage x509.ExtKeyUsage, chain ...*x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "coordinator"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	out := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	for _, c := range chain {
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out
}

func startTLSServer(t *testing.T, cert tls.Certificate) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != PathHealth {
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(ErrorBody{Error: APIError{Code: CodeNotFound, Message: "no such thing", Hint: "check the path"}})
			return
		}
		_ = json.NewEncoder(w).Encode(Health{Status: "ok", NodeID: "c1", Version: "test"})
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestPinnedTLS(t *testing.T) {
	ca, other := newTestCA(t, "rivet cluster CA"), newTestCA(t, "rivet cluster CA") // same name, other key
	pin := Fingerprint(ca.cert.Raw)
	tests := []struct {
		name string
		cert tls.Certificate
		pin  string
		err  string // "" means the call succeeds
	}{
		{"right fingerprint", ca.serverCert(t, x509.ExtKeyUsageServerAuth, ca.cert), pin, ""},
		{"wrong fingerprint", ca.serverCert(t, x509.ExtKeyUsageServerAuth, ca.cert), Fingerprint(other.cert.Raw),
			"no CA with the pinned fingerprint"},
		// An impostor can send the real CA's public certificate along; its leaf must still
		// have been signed by that CA.
		{"impostor showing the pinned CA", other.serverCert(t, x509.ExtKeyUsageServerAuth, ca.cert), pin,
			"does not verify against the pinned CA"},
		{"server does not send its CA", ca.serverCert(t, x509.ExtKeyUsageServerAuth), pin,
			"no CA with the pinned fingerprint"},
		{"leaf not for servers", ca.serverCert(t, x509.ExtKeyUsageClientAuth, ca.cert), pin,
			"does not verify against the pinned CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTLSServer(t, tt.cert)
			c, err := NewClient(ClientConfig{URLs: []string{srv.URL}, CAFingerprint: tt.pin, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			h, err := c.Health(context.Background())
			if tt.err == "" {
				if err != nil || h.NodeID != "c1" {
					t.Fatalf("Health = %+v, %v", h, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.err)
			}
		})
	}
}

func TestPinnedTLSConfigNeedsAFingerprint(t *testing.T) {
	if _, err := PinnedTLSConfig(""); err == nil || !strings.Contains(err.Error(), "--ca-fingerprint") {
		t.Errorf("no fingerprint: %v, want a hint naming --ca-fingerprint", err)
	}
	for _, fp := range []string{"abc", "sha256:" + strings.Repeat("A", 64), "sha1:" + strings.Repeat("a", 40)} {
		if _, err := PinnedTLSConfig(fp); err == nil {
			t.Errorf("PinnedTLSConfig(%q) accepted a malformed fingerprint", fp)
		}
	}
	if fp := Fingerprint([]byte("x")); ValidateFingerprint(fp) != nil {
		t.Errorf("Fingerprint gives %q, which does not validate", fp)
	}
}

func TestClientFailsOverAndDecodesErrors(t *testing.T) {
	ca := newTestCA(t, "ca")
	srv := startTLSServer(t, ca.serverCert(t, x509.ExtKeyUsageServerAuth, ca.cert))
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "https://" + dead.Addr().String()
	dead.Close() // nothing listens there any more: connections are refused

	c, err := NewClient(ClientConfig{URLs: []string{deadURL, srv.URL}, CAFingerprint: Fingerprint(ca.cert.Raw)})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := c.Health(context.Background()); err != nil || h.Status != "ok" {
		t.Fatalf("Health with the first coordinator down = %+v, %v", h, err)
	}
	_, err = c.Machine(context.Background(), "m-0123456789abcdef")
	if StatusOf(err) != http.StatusNotFound || !strings.Contains(err.Error(), "check the path") {
		t.Errorf("a 404 answer = %v, want an APIError with status 404 and the server's hint", err)
	}
	if _, err := NewClient(ClientConfig{URLs: []string{"10.0.0.1:7443"}, CAFingerprint: Fingerprint(ca.cert.Raw)}); err == nil {
		t.Error("a URL without scheme was accepted")
	}
}

// TestClientFailsOverWhenACoordinatorHasNoLeader: a coordinator cut off from the
// majority answers 503 no_leader (the write was not applied); the client asks the next.
func TestClientFailsOverWhenACoordinatorHasNoLeader(t *testing.T) {
	ca := newTestCA(t, "ca")
	cert := ca.serverCert(t, x509.ExtKeyUsageServerAuth, ca.cert)
	minority := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(ErrorBody{Error: APIError{Code: CodeNoLeader, Message: "no leader to accept the write"}})
	}))
	minority.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	minority.StartTLS()
	t.Cleanup(minority.Close)
	majority := startTLSServer(t, cert)
	for range 8 { // whichever coordinator the client starts at
		c, err := NewClient(ClientConfig{URLs: []string{minority.URL, majority.URL}, CAFingerprint: Fingerprint(ca.cert.Raw)})
		if err != nil {
			t.Fatal(err)
		}
		if h, err := c.Health(context.Background()); err != nil || h.Status != "ok" {
			t.Fatalf("Health with a leaderless coordinator first = %+v, %v", h, err)
		}
	}
	alone, err := NewClient(ClientConfig{URLs: []string{minority.URL}, CAFingerprint: Fingerprint(ca.cert.Raw)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alone.Health(context.Background()); CodeOf(err) != CodeNoLeader || StatusOf(err) != http.StatusServiceUnavailable {
		t.Fatalf("with only the leaderless coordinator: %v; want its 503 no_leader", err)
	}
}

// TestClientsSpreadOverCoordinators: clients given the same list do not all start at
// its head.
func TestClientsSpreadOverCoordinators(t *testing.T) {
	starts := map[uint32]bool{}
	for range 64 {
		c, err := NewClient(ClientConfig{URLs: []string{"https://10.0.0.1:7443", "https://10.0.0.2:7443", "https://10.0.0.3:7443"},
			CAFingerprint: "sha256:" + strings.Repeat("ab", 32)})
		if err != nil {
			t.Fatal(err)
		}
		starts[c.WithToken("t").next.Load()] = true
	}
	if len(starts) < 2 {
		t.Fatalf("64 clients all started at coordinator %v", starts)
	}
}

// TestClientResendsOnlyWhatCertainlyChangedNothing: the first coordinator fails a
// request in each way it can; the client asks the second one only when the first
// certainly applied nothing (no_leader, not_applied, a read whose connection broke).
// An outcome_unknown answer, or a write whose connection broke after it was sent, comes
// back to the caller and is not resent.
func TestClientResendsOnlyWhatCertainlyChangedNothing(t *testing.T) {
	ca := newTestCA(t, "ca")
	cert := ca.serverCert(t, x509.ExtKeyUsageServerAuth, ca.cert)
	answer := func(status int, code string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(ErrorBody{Error: APIError{Code: code, Message: code}})
		}
	}
	hangUp := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // the whole request arrived
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}
	for _, tc := range []struct {
		name     string
		method   string
		first    http.HandlerFunc
		resent   bool
		wantCode string
	}{
		{"no leader", http.MethodPost, answer(http.StatusServiceUnavailable, CodeNoLeader), true, ""},
		{"not applied", http.MethodPost, answer(http.StatusServiceUnavailable, CodeNotApplied), true, ""},
		{"outcome unknown", http.MethodPost, answer(http.StatusServiceUnavailable, CodeOutcomeUnknown), false, CodeOutcomeUnknown},
		{"rejected", http.MethodPost, answer(http.StatusConflict, CodeConflict), false, CodeConflict},
		{"write, connection lost after send", http.MethodPost, hangUp, false, ""},
		{"read, connection lost after send", http.MethodGet, hangUp, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var firstSaw, secondSaw atomic.Int64
			first := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				firstSaw.Add(1)
				tc.first(w, r)
			}))
			second := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				secondSaw.Add(1)
				_, _ = io.WriteString(w, "{}")
			}))
			for _, srv := range []*httptest.Server{first, second} {
				srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
				srv.Config.ErrorLog = log.New(io.Discard, "", 0)
				srv.StartTLS()
				t.Cleanup(srv.Close)
			}
			c, err := NewClient(ClientConfig{URLs: []string{first.URL, second.URL}, CAFingerprint: Fingerprint(ca.cert.Raw)})
			if err != nil {
				t.Fatal(err)
			}
			c.next.Store(0) // start at the first
			var in any
			if tc.method == http.MethodPost {
				in = struct{}{}
			}
			err = c.Do(context.Background(), tc.method, "/v1/x", in, nil)
			if firstSaw.Load() != 1 {
				t.Fatalf("the first coordinator saw %d requests, want 1", firstSaw.Load())
			}
			if got := secondSaw.Load() == 1; got != tc.resent {
				t.Fatalf("resent to the second coordinator: %v, want %v (err %v)", got, tc.resent, err)
			}
			if tc.resent && err != nil {
				t.Fatalf("resent, but the caller got %v", err)
			}
			if !tc.resent && err == nil {
				t.Fatal("not resent, but the caller was told it succeeded")
			}
			if tc.wantCode != "" && CodeOf(err) != tc.wantCode {
				t.Fatalf("error %v, want code %s", err, tc.wantCode)
			}
		})
	}
}
