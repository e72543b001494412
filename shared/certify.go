package shared

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// PathClusterCertify: POST CertifyRequest (admin) → CertifyResponse. A coordinator
// that is about to join sends its CSR (its key never leaves it) and gets the cluster CA,
// its node certificate and the seal key, before it opens its Raft link.
const PathClusterCertify = "/v1/cluster/certify"

// CertifyRequest asks for a node certificate for coordinator ID.
type CertifyRequest struct {
	ID  string `json:"id"`
	CSR string `json:"csr"` // PEM CERTIFICATE REQUEST naming rivet://coordinator/<id>
}

// Validate checks the request's shape; the CA checks the CSR itself.
func (r *CertifyRequest) Validate() error {
	if err := ValidateName("coordinator", r.ID); err != nil {
		return err
	}
	if !strings.HasPrefix(r.CSR, "-----BEGIN CERTIFICATE REQUEST-----") || len(r.CSR) > 8<<10 {
		return errors.New("csr: want one PEM CERTIFICATE REQUEST of at most 8 KiB")
	}
	return nil
}

// CertifyResponse carries a joining coordinator's credentials. SealKey is a secret.
type CertifyResponse struct {
	CACert   string `json:"ca_cert"`
	NodeCert string `json:"node_cert"`
	SealKey  string `json:"seal_key"`
}

// Validate checks that every part is there.
func (r *CertifyResponse) Validate() error {
	if r.CACert == "" || r.NodeCert == "" || r.SealKey == "" {
		return errors.New("incomplete answer: want ca_cert, node_cert and seal_key")
	}
	return nil
}

// Certify asks the cluster for a node certificate (admin token).
func (c *Client) Certify(ctx context.Context, req *CertifyRequest) (*CertifyResponse, error) {
	var out CertifyResponse
	if err := c.Do(ctx, http.MethodPost, PathClusterCertify, req, &out); err != nil {
		return nil, err
	}
	return &out, out.Validate()
}
