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
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// A node certificate is a coordinator's identity on its links to the other coordinators
// (Raft, forwarding) and its API serving certificate. It names the node id in a URI SAN,
// rivet://coordinator/<id>; peers read the id from there and nowhere else.

const nodeURIPrefix = "rivet://coordinator/"

// NodeURI is the URI SAN that names coordinator id.
func NodeURI(id string) string { return nodeURIPrefix + id }

// NodeID returns the coordinator id a certificate names, or "" if it names none.
func NodeID(cert *x509.Certificate) string {
	var id string
	for _, u := range cert.URIs {
		if rest, ok := strings.CutPrefix(u.String(), nodeURIPrefix); ok {
			if id != "" {
				return "" // two identities: none
			}
			id = rest
		}
	}
	if shared.ValidateName("coordinator", id) != nil {
		return ""
	}
	return id
}

// NodeLifetime is how long a node certificate is valid by default.
const NodeLifetime = 365 * 24 * time.Hour

// NewNodeKey makes a P-256 key for a node certificate, in PEM.
func NewNodeKey() (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), nil
}

func parseKey(keyPEM string) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(keyPEM))
	if block == nil {
		return nil, errors.New("pki: key is not PEM")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

// NodeCSR is a certificate request for coordinator id at hosts (IPs or names), signed
// with keyPEM: the key stays with the coordinator, the CSR travels.
func NodeCSR(keyPEM, id string, hosts []string) (string, error) {
	key, err := parseKey(keyPEM)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(NodeURI(id))
	if err != nil {
		return "", err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: id, Organization: []string{"Rivet"}}, URIs: []*url.URL{u}}
	addHosts(&tmpl.IPAddresses, &tmpl.DNSNames, hosts)
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

func addHosts(ips *[]net.IP, names *[]string, hosts []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			*ips = append(*ips, ip)
		} else if h != "" {
			*names = append(*names, h)
		}
	}
}

// IssueNode signs a node CSR for coordinator id, valid for lifetime from now. The CSR must
// name exactly that id; its host names and IPs are kept.
func (ca CA) IssueNode(csrPEM, id string, now time.Time, lifetime time.Duration) (string, error) {
	block, _ := pem.Decode([]byte(csrPEM))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return "", errors.New("pki: the CSR is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("pki: CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return "", fmt.Errorf("pki: CSR signature: %w", err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != NodeURI(id) {
		return "", fmt.Errorf("pki: the CSR must name exactly %s", NodeURI(id))
	}
	if _, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok {
		return "", errors.New("pki: the CSR's key must be ECDSA")
	}
	caCert, caKey, err := ca.signer()
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: id, Organization: []string{"Rivet"}},
		NotBefore:    now.Add(-min(time.Minute, lifetime/10)), // a peer's clock a little behind
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         csr.URIs,
		IPAddresses:  csr.IPAddresses,
		DNSNames:     csr.DNSNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, csr.PublicKey, caKey)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

func (ca CA) signer() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	caCert, err := ca.cert()
	if err != nil {
		return nil, nil, err
	}
	if ca.KeyPEM == "" {
		return nil, nil, errors.New("pki: no CA key here to sign with")
	}
	caKey, err := parseKey(ca.KeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: CA key: %w", err)
	}
	return caCert, caKey, nil
}

// NodeCertificate pairs a node certificate with its key for TLS, with the CA appended
// so that clients pinning the CA by fingerprint find it in the chain.
func (ca CA) NodeCertificate(certPEM, keyPEM string) (*tls.Certificate, error) {
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("pki: node certificate: %w", err)
	}
	caCert, err := ca.cert()
	if err != nil {
		return nil, err
	}
	pair.Certificate = append(pair.Certificate, caCert.Raw)
	return &pair, nil
}
