package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/forward"
	"github.com/rivetmetal/rivet/coordinator/fsm"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// ForwardMaxBytes bounds one forwarded batch; the internal endpoint accepts twice that.
const ForwardMaxBytes = forward.MaxBytes

// Apply replicates one command and returns its result. On a follower the command is
// forwarded to the leader. A nil error means the command is committed: it survives the
// loss of the leader and a restart of every coordinator. Otherwise the error is one of
// the write path's (state/errors.go): *state.Rejected, state.ErrNotApplied,
// state.ErrOutcomeUnknown or state.ErrNoLeader.
func (s *Server) Apply(ctx context.Context, cmd state.Command) (state.Result, error) {
	if err := s.gateProtocol(cmd); err != nil {
		return state.Result{}, err
	}
	data, err := fsm.Encode(s.sealSecrets(cmd))
	if err != nil {
		return state.Result{}, err
	}
	return s.ApplyEncoded(ctx, data)
}

// gateProtocol refuses a command the cluster's protocol does not include yet, so that no
// member meets an entry it cannot apply. The store's protocol is the replicated one: a
// lagging follower may refuse a little longer than the leader, never accept earlier.
func (s *Server) gateProtocol(cmd state.Command) error {
	return protocolGate(cmd, s.store.Protocol(), fsm.Since)
}

// protocolGate is gateProtocol's decision, given the cluster's protocol and each
// command's. RaiseProtocol has its own gate: the members' reported protocols
// (versions.go).
func protocolGate(cmd state.Command, have int, since func(state.Command) (int, error)) error {
	if _, raise := cmd.(state.RaiseProtocol); raise {
		return nil
	}
	need, err := since(cmd)
	if err != nil {
		return err
	}
	if need > have {
		return state.NeedProtocol(fmt.Sprintf("%T", cmd), need, have)
	}
	return nil
}

// ApplyEncoded is Apply for an already encoded command. It tries again only while the
// command was certainly not applied (state.ErrNotApplied), until ApplyTimeout or ctx
// ends; a write whose outcome is unknown is never resent.
func (s *Server) ApplyEncoded(ctx context.Context, data []byte) (state.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		if s.raft.State() != raft.Leader {
			return s.forwarder.Apply(ctx, data)
		}
		res, err := s.applyLocal(data)
		if !errors.Is(err, state.ErrNotApplied) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return state.Result{}, err
		case <-time.After(backoff(attempt)):
		}
	}
}

// applyLocal appends one command to the log of this node, the leader, once.
func (s *Server) applyLocal(data []byte) (state.Result, error) {
	start := time.Now()
	f := s.raft.Apply(data, s.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return state.Result{}, fmt.Errorf("%w: %w: %v", state.ErrNoLeader, state.ErrNotApplied, err)
		case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrRaftShutdown):
			return state.Result{}, fmt.Errorf("%w: %v", state.ErrNotApplied, err)
		case errors.Is(err, raft.ErrLeadershipLost):
			// Under load leadership can move mid-commit: not a server fault, and the
			// entry may still be committed by the next leader.
			return state.Result{}, fmt.Errorf("%w: leadership lost before the write was confirmed", state.ErrOutcomeUnknown)
		}
		return state.Result{}, fmt.Errorf("raft apply: %w", err)
	}
	s.metrics.applySeconds.Observe(time.Since(start).Seconds())
	out, _ := f.Response().(fsm.Outcome)
	return out.Result, out.Err
}

// HandleInternalApply is the leader's side of forwarding: it applies a batch of commands
// a follower sent, each once (the follower decides what to resend). A node that is not
// the leader answers 421 so the follower asks again.
func (s *Server) HandleInternalApply(ctx context.Context, body []byte) (resultJSON []byte, status int) {
	return forward.Serve(ctx, body, s.IsLeader, func(_ context.Context, data []byte) (state.Result, error) {
		if !s.IsLeader() {
			return state.Result{}, fmt.Errorf("%w: %w: no longer the leader", state.ErrNoLeader, state.ErrNotApplied)
		}
		return s.applyLocal(data)
	})
}

// newForwarder sends this node's writes to the leader while it follows.
func (s *Server) newForwarder() *forward.Forwarder {
	var mu sync.Mutex
	var client *http.Client // made on first use
	return forward.New(forward.Config{
		Leader: s.leaderAPI,
		Client: func() (*http.Client, error) {
			mu.Lock()
			defer mu.Unlock()
			if client != nil {
				return client, nil
			}
			tlsCfg, err := shared.PinnedTLSConfig(s.CAFingerprint())
			if err != nil {
				return nil, err
			}
			tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return s.id.cert.Get()
			}
			tr := &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 64,
				IdleConnTimeout: time.Minute, ForceAttemptHTTP2: true}
			client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
			return client, nil
		},
		Token:        func() string { return auth.InternalToken(s.store.Cluster().TokenSecret) },
		BatchTimeout: s.cfg.ApplyTimeout + 5*time.Second,
	})
}

// leaderAPI returns the leader's API base URL, or state.ErrNoLeader while there is none.
func (s *Server) leaderAPI() (string, error) {
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return "", fmt.Errorf("%w: no leader elected", state.ErrNoLeader)
	}
	c, ok := s.store.Coordinator(string(id))
	if !ok || c.APIAddr == "" {
		return "", fmt.Errorf("%w: leader %s has not published its API address yet", state.ErrNoLeader, id)
	}
	return "https://" + c.APIAddr, nil
}

func backoff(attempt int) time.Duration { return forward.Backoff(attempt) }
