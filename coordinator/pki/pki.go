// Package pki creates the cluster CA and issues each coordinator its serving certificate.
// The CA lives in the replicated state, so every coordinator serves with the same CA and
// clients pin it by fingerprint (shared.PinnedTLSConfig).
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// CA is a certificate authority in PEM form.
type CA struct {
	CertPEM string
	KeyPEM  string
}

// NewCA creates a P-256 CA valid for ten years.
func NewCA(name string, now time.Time) (CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CA{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Rivet"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return CA{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return CA{}, err
	}
	return CA{
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})),
	}, nil
}

// Fingerprint returns "sha256:<hex>" of the CA certificate, the value clients pin.
func (ca CA) Fingerprint() (string, error) {
	cert, err := ca.cert()
	if err != nil {
		return "", err
	}
	return shared.Fingerprint(cert.Raw), nil
}

func (ca CA) cert() (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(ca.CertPEM))
	if block == nil {
		return nil, errors.New("pki: CA certificate is not PEM")
	}
	return x509.ParseCertificate(block.Bytes)
}

// Pool returns a cert pool holding only this CA.
func (ca CA) Pool() (*x509.CertPool, error) {
	cert, err := ca.cert()
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, nil
}

// IssueServer issues a serving certificate for hosts (IPs or names), valid for a year,
// with the CA appended so clients can find the pinned CA in the chain.
func (ca CA) IssueServer(hosts []string, now time.Time) (tls.Certificate, error) {
	caCert, err := ca.cert()
	if err != nil {
		return tls.Certificate{}, err
	}
	block, _ := pem.Decode([]byte(ca.KeyPEM))
	if block == nil {
		return tls.Certificate{}, errors.New("pki: CA key is not PEM")
	}
	caKey, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: CA key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "rivet-coordinator", Organization: []string{"Rivet"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, caCert.Raw}, PrivateKey: key}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
