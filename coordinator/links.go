package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/pki"
	"github.com/rivetmetal/rivet/coordinator/raftlink"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// Coordinators talk to each other only over mutual TLS with the cluster CA: Raft through
// raftlink, forwarded writes and joins through the API with the node certificate as
// client certificate. This file wires both ends and the join that hands out identities.

// openIdentity loads this node's identity, or makes it: a new cluster's at bootstrap, or
// one from the cluster it joins.
func (s *Server) openIdentity(ctx context.Context) error {
	id, err := loadIdentity(s.cfg.DataDir)
	if errors.Is(err, errNoIdentity) {
		if hasRaftLog(s.cfg.DataDir) {
			return fmt.Errorf("%s has a Raft log but no %s: it predates mutual-TLS coordinator links; "+
				"start this coordinator with an empty data dir and --join the cluster", s.cfg.DataDir, caCertFile)
		}
		if len(s.cfg.Join) > 0 {
			err = joinIdentity(ctx, s.cfg, s.cfg.CertLifetime)
		} else {
			s.log.Info("creating the cluster CA and seal key", "dir", s.cfg.DataDir)
			err = bootstrapIdentity(s.cfg.DataDir, s.cfg.NodeID, s.cfg.Advertise, s.cfg.CertLifetime)
		}
		if err != nil {
			return err
		}
		id, err = loadIdentity(s.cfg.DataDir)
	}
	if err != nil {
		return err
	}
	if got := pki.NodeID(id.cert.Current().Leaf); got != s.cfg.NodeID {
		return fmt.Errorf("the node certificate in %s names %q, but this coordinator is %q", s.cfg.DataDir, got, s.cfg.NodeID)
	}
	id.cert.Issue = s.renewNodeCert
	id.cert.OnError = func(err error) { s.log.Warn("node certificate renewal failed; retrying", "err", err) }
	s.id = id
	return nil
}

// openLink opens the Raft transport over mutual TLS.
func (s *Server) openLink() (*raft.NetworkTransport, error) {
	advertise, err := advertiseAddr(s.cfg.RaftAddr, s.cfg.Advertise)
	if err != nil {
		return nil, err
	}
	layer, err := raftlink.Listen(raftlink.Config{Listen: s.cfg.RaftAddr, Advertise: advertise,
		Certificate: s.id.cert.Get, Roots: s.id.roots, Member: s.isMember,
		Refused: s.metrics.linkRefused, Logger: s.log.With("component", "raft-link")})
	if err != nil {
		return nil, fmt.Errorf("raft transport on %s: %w", s.cfg.RaftAddr, err)
	}
	return raft.NewNetworkTransportWithLogger(layer, 5, 10*time.Second, newHCLog(s.log, "raft-net", hclog.Warn)), nil
}

// isMember says whether coordinator id may talk Raft with this one: any holder of a
// cluster certificate while the local configuration is empty (a joiner waiting for the
// leader), afterwards only the configuration's servers.
func (s *Server) isMember(id string) bool {
	r := s.raftNode.Load()
	if r == nil {
		return false // not ready for RPCs yet; the peer dials again
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	servers := f.Configuration().Servers
	for _, srv := range servers {
		if string(srv.ID) == id {
			return true
		}
	}
	return len(servers) == 0
}

// requireNodeCert guards the coordinator-to-coordinator API calls (forwarded writes,
// and anything carrying the internal token): besides the token, the caller must present
// a node certificate of the cluster CA for a current member.
func (s *Server) requireNodeCert(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.isInternalCall(r) {
			next.ServeHTTP(w, r)
			return
		}
		if err := s.verifyNodeCaller(r); err != nil {
			s.metrics.linkRefused("api")
			s.log.Warn("refused a coordinator call", "path", r.URL.Path, "from", r.RemoteAddr, "err", err)
			writeAPIError(w, shared.Errorf(http.StatusForbidden, shared.CodeForbidden,
				"coordinator calls need this cluster's node certificate", "%v", err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) isInternalCall(r *http.Request) bool {
	if r.URL.Path == shared.PathInternalApply {
		return true
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && strings.HasPrefix(bearer, "rvi_")
}

func (s *Server) verifyNodeCaller(r *http.Request) error {
	// The handshake verified the chain against the cluster CA (ClientCAs, client-auth
	// usage): VerifiedChains is its result. Verifying again per request cost the leader a
	// sixth of its CPU under forwarded writes (an ECDSA check per batch).
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return errors.New("no client certificate from the cluster CA")
	}
	id := pki.NodeID(r.TLS.VerifiedChains[0][0])
	if id == "" {
		return errors.New("the client certificate names no coordinator")
	}
	if !s.isMember(id) {
		return fmt.Errorf("coordinator %q is not in the Raft configuration", id)
	}
	return nil
}

// handleCertify is a member's side of the join: an admin asks for a node certificate for
// a coordinator that is about to join, and gets it with the CA and the seal key.
func (s *Server) handleCertify(w http.ResponseWriter, r *http.Request) {
	if err := s.certify(w, r); err != nil {
		writeAPIError(w, err)
	}
}

func (s *Server) certify(w http.ResponseWriter, r *http.Request) error {
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if p, err := auth.Resolve(s.store, bearer); err != nil || !p.IsAdmin() {
		return shared.Errorf(http.StatusUnauthorized, shared.CodeUnauthorized,
			"pass the cluster's admin token in RIVET_TOKEN or --token-file", "joining needs an admin token")
	}
	var req shared.CertifyRequest
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &req); err != nil {
		return err
	}
	cl := s.store.Cluster()
	if cl.CAKeyPEM == "" {
		return shared.Errorf(http.StatusServiceUnavailable, shared.CodeNoLeader, "retry in a moment",
			"this coordinator does not have the cluster CA yet")
	}
	ca := pki.CA{CertPEM: cl.CACertPEM, KeyPEM: cl.CAKeyPEM}
	cert, err := ca.IssueNode(req.CSR, req.ID, time.Now(), s.cfg.CertLifetime)
	if err != nil {
		return shared.Errorf(http.StatusBadRequest, shared.CodeBadRequest, "", "%v", err)
	}
	s.log.Info("issued a node certificate to a joining coordinator", "id", req.ID, "from", r.RemoteAddr)
	writeAPIJSON(w, http.StatusOK, shared.CertifyResponse{CACert: cl.CACertPEM, NodeCert: cert, SealKey: s.id.seal.String()})
	return nil
}

func writeAPIError(w http.ResponseWriter, err error) {
	var apiErr *shared.APIError
	if !errors.As(err, &apiErr) {
		apiErr = shared.Errorf(http.StatusInternalServerError, shared.CodeInternal, "see the coordinator's log", "internal error")
	}
	writeAPIJSON(w, apiErr.Status, shared.ErrorBody{Error: *apiErr})
}

func writeAPIJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// sealSecrets seals the secret fields of a command before it enters the log.
func (s *Server) sealSecrets(cmd state.Command) state.Command {
	switch c := cmd.(type) {
	case state.InitCluster:
		c.Cluster = state.SealCluster(s.id.seal, c.Cluster)
		return c
	case state.SwarmReport:
		return state.SealSwarmReport(s.id.seal, c)
	case state.SwarmOpDone:
		return state.SealSwarmOpDone(s.id.seal, c)
	case state.PutExpected:
		return state.SealExpected(s.id.seal, c)
	}
	return cmd
}
