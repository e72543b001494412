package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

func TestIssueNodeNamesTheIDAndOnlyThatID(t *testing.T) {
	ca, err := NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewNodeKey()
	csr, err := NodeCSR(key, "c2", []string{"10.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueNode(csr, "c1", time.Now(), time.Hour); err == nil {
		t.Fatal("a CSR for c2 was signed as c1")
	}
	if _, err := ca.IssueNode(strings.Replace(csr, "A", "B", 5), "c2", time.Now(), time.Hour); err == nil {
		t.Fatal("a tampered CSR was signed")
	}
	if _, err := (CA{CertPEM: ca.CertPEM}).IssueNode(csr, "c2", time.Now(), time.Hour); err == nil {
		t.Fatal("signed without the CA key")
	}
	certPEM, err := ca.IssueNode(csr, "c2", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.NodeCertificate(certPEM, key)
	if err != nil {
		t.Fatal(err)
	}
	if id := NodeID(cert.Leaf); id != "c2" {
		t.Fatalf("NodeID = %q", id)
	}
	if len(cert.Certificate) != 2 {
		t.Fatalf("chain of %d, want the node certificate and the CA", len(cert.Certificate))
	}
}

func TestRenewingReplacesTheCertificateInItsLastThird(t *testing.T) {
	ca, _ := NewCA("test", time.Now())
	start := time.Now()
	issue := func(now time.Time) (*tls.Certificate, error) {
		key, _ := NewNodeKey()
		csr, _ := NodeCSR(key, "c1", nil)
		p, err := ca.IssueNode(csr, "c1", now, 30*time.Hour)
		if err != nil {
			return nil, err
		}
		return ca.NodeCertificate(p, key)
	}
	first, _ := issue(start)
	now := start
	r := NewRenewing(first, issue)
	r.Now = func() time.Time { return now }
	if got, _ := r.Get(); got != first {
		t.Fatal("renewed a fresh certificate")
	}
	now = start.Add(18 * time.Hour) // 12 h of 33 h left: not yet a third
	if got, _ := r.Get(); got != first {
		t.Fatal("renewed with more than a third of the lifetime left")
	}
	now = start.Add(21 * time.Hour)
	got, _ := r.Get()
	if got == first || !got.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Fatalf("not renewed in the last third: valid until %v", got.Leaf.NotAfter)
	}
}

func FuzzIssueNode(f *testing.F) {
	ca, err := NewCA("fuzz", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	key, _ := NewNodeKey()
	csr, _ := NodeCSR(key, "c1", []string{"10.0.0.1", "host"})
	f.Add(csr)
	f.Add("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
	f.Fuzz(func(t *testing.T, csr string) {
		certPEM, err := ca.IssueNode(csr, "c1", time.Now(), time.Hour)
		if err != nil {
			return
		}
		block, _ := pem.Decode([]byte(certPEM))
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil || NodeID(cert) != "c1" {
			t.Fatalf("issued a certificate that does not name c1: %v", err)
		}
	})
}
