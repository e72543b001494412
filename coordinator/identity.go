package coordinator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rivetmetal/rivet/coordinator/pki"
	"github.com/rivetmetal/rivet/coordinator/seal"
	"github.com/rivetmetal/rivet/internal/atomicfile"
	"github.com/rivetmetal/rivet/shared"
)

// A coordinator's identity is three files in its data dir, all 0600, made before its
// Raft link opens and reused at every restart:
//
//	ca.crt    the cluster CA certificate (the key is in the replicated state, sealed)
//	node.pem  this node's certificate (naming rivet://coordinator/<id>) and its key
//	seal.key  the key that seals the cluster's secrets in raft.db and snapshots
//
// The bootstrapping coordinator makes them all, and keeps the new CA's key in
// bootstrap-ca.key until the first leader has put it into the replicated state. A
// joining coordinator gets them from a member through the authenticated join
// (PathClusterCertify): only its CSR travels, its key never leaves it.
const (
	caCertFile      = "ca.crt"
	nodeFile        = "node.pem"
	bootstrapCAFile = "bootstrap-ca.key"
)

// identity is what a coordinator proves itself with on its links and its API.
type identity struct {
	ca    pki.CA // the certificate; the key only at bootstrap (see above)
	roots *x509.CertPool
	seal  *seal.Key
	cert  *pki.Renewing
}

// errNoIdentity: the data dir has no identity yet.
var errNoIdentity = errors.New("no identity in the data dir")

// loadIdentity reads the identity files, or returns errNoIdentity.
func loadIdentity(dir string) (*identity, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoIdentity
	}
	if err != nil {
		return nil, err
	}
	id := &identity{ca: pki.CA{CertPEM: string(caPEM)}}
	if key, err := os.ReadFile(filepath.Join(dir, bootstrapCAFile)); err == nil {
		id.ca.KeyPEM = string(key)
	}
	if id.roots, err = id.ca.Pool(); err != nil {
		return nil, fmt.Errorf("%s: %w", caCertFile, err)
	}
	if id.seal, err = seal.Load(dir); err != nil {
		return nil, fmt.Errorf("the seal key: %w (restore DATA_DIR/%s from a backup: without it the cluster's secrets cannot be read)", err, seal.KeyFile)
	}
	node, err := os.ReadFile(filepath.Join(dir, nodeFile))
	if err != nil {
		return nil, fmt.Errorf("the node certificate: %w", err)
	}
	cert, err := id.ca.NodeCertificate(string(node), string(node))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, nodeFile), err)
	}
	id.cert = pki.NewRenewing(cert, nil)
	return id, nil
}

// nodeHosts are the names and IPs a node certificate carries (the API serves with it).
func nodeHosts(advertise string) []string {
	host, _ := os.Hostname()
	return []string{advertise, "127.0.0.1", "::1", "localhost", host}
}

// bootstrapIdentity makes a new cluster's CA, seal key and this node's certificate.
func bootstrapIdentity(dir, nodeID, advertise string, lifetime time.Duration) error {
	now := time.Now().UTC()
	ca, err := pki.NewCA("Rivet cluster CA", now)
	if err != nil {
		return err
	}
	key, err := seal.New()
	if err != nil {
		return err
	}
	keyPEM, err := pki.NewNodeKey()
	if err != nil {
		return err
	}
	csr, err := pki.NodeCSR(keyPEM, nodeID, nodeHosts(advertise))
	if err != nil {
		return err
	}
	cert, err := ca.IssueNode(csr, nodeID, now, lifetime)
	if err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, seal.KeyFile)) // left by a bootstrap cut short: nothing is sealed with it yet
	if err := key.Save(dir); err != nil {
		return err
	}
	if err := writePrivate(dir, bootstrapCAFile, ca.KeyPEM); err != nil {
		return err
	}
	return saveNodeFiles(dir, ca.CertPEM, cert, keyPEM)
}

// joinIdentity gets this node's credentials from the cluster it joins, retrying until a
// member answers or ctx ends.
func joinIdentity(ctx context.Context, cfg Config, lifetime time.Duration) error {
	client, err := shared.NewClient(shared.ClientConfig{URLs: cfg.Join, CAFingerprint: cfg.CAFingerprint,
		Token: cfg.JoinToken, Timeout: 15 * time.Second})
	if err != nil {
		return fmt.Errorf("--join: %w", err)
	}
	keyPEM, err := pki.NewNodeKey()
	if err != nil {
		return err
	}
	csr, err := pki.NodeCSR(keyPEM, cfg.NodeID, nodeHosts(cfg.Advertise))
	if err != nil {
		return err
	}
	req := &shared.CertifyRequest{ID: cfg.NodeID, CSR: csr}
	for attempt := 0; ; attempt++ {
		resp, err := client.Certify(ctx, req)
		if err == nil {
			return storeJoinAnswer(cfg.DataDir, resp, keyPEM, cfg.CAFingerprint)
		}
		if st := shared.StatusOf(err); st == 400 || st == 401 || st == 403 {
			return fmt.Errorf("joining %v: %w", cfg.Join, err)
		}
		cfg.Logger.Warn("getting a node certificate from the cluster failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff(attempt)):
		}
	}
}

// storeJoinAnswer checks the answer against the pinned CA and writes the identity files.
func storeJoinAnswer(dir string, resp *shared.CertifyResponse, keyPEM, fingerprint string) error {
	ca := pki.CA{CertPEM: resp.CACert}
	if fp, err := ca.Fingerprint(); err != nil || fp != fingerprint {
		return fmt.Errorf("the cluster answered with a CA other than --ca-fingerprint %s", fingerprint)
	}
	if _, err := ca.NodeCertificate(resp.NodeCert, keyPEM); err != nil {
		return err
	}
	key, err := seal.Parse(resp.SealKey)
	if err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, seal.KeyFile))
	if err := key.Save(dir); err != nil {
		return err
	}
	return saveNodeFiles(dir, resp.CACert, resp.NodeCert, keyPEM)
}

// saveNodeFiles writes node.pem, then ca.crt: ca.crt's presence marks a whole identity.
func saveNodeFiles(dir, caPEM, certPEM, keyPEM string) error {
	if err := writePrivate(dir, nodeFile, certPEM+keyPEM); err != nil {
		return err
	}
	return writePrivate(dir, caCertFile, caPEM)
}

// writePrivate replaces DIR/name atomically (crash-safe) with a 0600 file.
func writePrivate(dir, name, content string) error {
	return atomicfile.Write(filepath.Join(dir, name), []byte(content), 0o600)
}

// renewNodeCert issues this node a fresh certificate with a new key, signed by the
// cluster CA (from the replicated state, or the bootstrap file before that), and
// persists it so a restart keeps it.
func (s *Server) renewNodeCert(now time.Time) (*tls.Certificate, error) {
	ca := s.id.ca
	if cl := s.store.Cluster(); cl.CAKeyPEM != "" {
		ca.KeyPEM = cl.CAKeyPEM
	}
	keyPEM, err := pki.NewNodeKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NodeCSR(keyPEM, s.cfg.NodeID, nodeHosts(s.cfg.Advertise))
	if err != nil {
		return nil, err
	}
	certPEM, err := ca.IssueNode(csr, s.cfg.NodeID, now, s.cfg.CertLifetime)
	if err != nil {
		return nil, fmt.Errorf("renewing the node certificate: %w", err)
	}
	cert, err := ca.NodeCertificate(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if err := writePrivate(s.cfg.DataDir, nodeFile, certPEM+keyPEM); err != nil {
		return nil, err
	}
	s.log.Info("node certificate renewed", "not_after", cert.Leaf.NotAfter)
	return cert, nil
}
