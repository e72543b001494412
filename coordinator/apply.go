package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/fsm"
	"github.com/rivetmetal/rivet/coordinator/pki"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// Apply replicates one command and returns its result. On a follower the command is
// forwarded to the leader. A nil error means the command is committed: it survives the
// loss of the leader and a restart of every coordinator.
func (s *Server) Apply(ctx context.Context, body any) (state.Result, error) {
	data, err := fsm.Encode(body)
	if err != nil {
		return state.Result{}, err
	}
	return s.ApplyEncoded(ctx, data)
}

// ApplyEncoded is Apply for an already encoded command (the internal forwarding path).
func (s *Server) ApplyEncoded(ctx context.Context, data []byte) (state.Result, error) {
	deadline := time.Now().Add(s.cfg.ApplyTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for attempt := 0; ; attempt++ {
		res, err := s.applyOnce(ctx, data, time.Until(deadline))
		if err == nil || !errors.Is(err, errRetry) || time.Now().After(deadline) {
			if errors.Is(err, errRetry) {
				err = noLeader(err)
			}
			return res, err
		}
		select {
		case <-ctx.Done():
			return state.Result{}, ctx.Err()
		case <-time.After(backoff(attempt)):
		}
	}
}

// errRetry marks failures where the command was certainly not applied, so trying again
// (on the next leader) is safe.
var errRetry = errors.New("retry")

func (s *Server) applyOnce(ctx context.Context, data []byte, timeout time.Duration) (state.Result, error) {
	if s.raft.State() == raft.Leader {
		start := time.Now()
		f := s.raft.Apply(data, timeout)
		if err := f.Error(); err != nil {
			if errors.Is(err, raft.ErrNotLeader) {
				return state.Result{}, fmt.Errorf("%w: %v", errRetry, err)
			}
			return state.Result{}, fmt.Errorf("raft apply: %w", err)
		}
		s.metrics.applySeconds.Observe(time.Since(start).Seconds())
		res, _ := f.Response().(state.Result)
		return res, nil
	}
	return s.forwarder.apply(ctx, data)
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 4)
	return min(d, time.Second)
}

func noLeader(cause error) error {
	return shared.Errorf(http.StatusServiceUnavailable, shared.CodeNoLeader,
		"the cluster has no leader: check `rivet members`; a majority of coordinators must be up",
		"no leader to accept the write (%v)", cause)
}

// forwarder sends commands from a follower to the leader's internal endpoint.
type forwarder struct {
	s      *Server
	mu     sync.Mutex
	client *http.Client // made once the cluster CA has replicated here
}

func newForwarder(s *Server) *forwarder { return &forwarder{s: s} }

// leaderAPI returns the leader's API base URL, or errRetry while there is none.
func (f *forwarder) leaderAPI() (string, error) {
	_, id := f.s.raft.LeaderWithID()
	if id == "" {
		return "", fmt.Errorf("%w: no leader elected", errRetry)
	}
	c, ok := f.s.store.Coordinator(string(id))
	if !ok || c.APIAddr == "" {
		return "", fmt.Errorf("%w: leader %s has not published its API address yet", errRetry, id)
	}
	return "https://" + c.APIAddr, nil
}

func (f *forwarder) tlsClient() (*http.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.client != nil {
		return f.client, nil
	}
	cl := f.s.store.Cluster()
	if !cl.Initialised() {
		return nil, fmt.Errorf("%w: cluster CA not replicated yet", errRetry)
	}
	fp, err := pki.CA{CertPEM: cl.CACertPEM}.Fingerprint()
	if err != nil {
		return nil, err
	}
	tlsCfg, err := shared.PinnedTLSConfig(fp)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 64,
		IdleConnTimeout: time.Minute, ForceAttemptHTTP2: true}
	f.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return f.client, nil
}

// forwardedResult carries a Result across the wire with its HTTP status (APIError's
// Status is not part of its JSON).
type forwardedResult struct {
	Result state.Result `json:"result"`
	Status int          `json:"status,omitempty"`
}

func (f *forwarder) apply(ctx context.Context, data []byte) (state.Result, error) {
	var out forwardedResult
	err := f.post(ctx, shared.PathInternalApply, "application/octet-stream", data, &out)
	if err != nil {
		return state.Result{}, err
	}
	if out.Result.Err != nil {
		out.Result.Err.Status = out.Status
	}
	return out.Result, nil
}

// post sends one request to the leader. Connection failures before the request was
// written are retryable; an answer is returned as is.
func (f *forwarder) post(ctx context.Context, path, contentType string, body []byte, out any) error {
	base, err := f.leaderAPI()
	if err != nil {
		return err
	}
	client, err := f.tlsClient()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+auth.InternalToken(f.s.store.Cluster().TokenSecret))
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: forwarding to leader %s: %v", errRetry, base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusMisdirectedRequest {
		// The node we thought leads does not any more: ask again.
		_, _ = io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("%w: %s is no longer the leader", errRetry, base)
	}
	if resp.StatusCode/100 != 2 {
		var env shared.ErrorBody
		_ = json.NewDecoder(io.LimitReader(resp.Body, shared.MaxSmallBody)).Decode(&env)
		env.Error.Status = resp.StatusCode
		if env.Error.Message == "" {
			env.Error.Message = "leader answered " + resp.Status
		}
		return &env.Error
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// HandleInternalApply is the leader's side of forwarding: it applies a command a
// follower sent. A node that is not the leader answers 421 so the follower asks again.
func (s *Server) HandleInternalApply(ctx context.Context, data []byte) (forwardedResultJSON []byte, status int) {
	if s.raft.State() != raft.Leader {
		return nil, http.StatusMisdirectedRequest
	}
	res, err := s.ApplyEncoded(ctx, data)
	if err != nil {
		return nil, statusOr(err, http.StatusServiceUnavailable)
	}
	out := forwardedResult{Result: res}
	if res.Err != nil {
		out.Status = res.Err.Status
	}
	b, _ := json.Marshal(out)
	return b, http.StatusOK
}

func statusOr(err error, def int) int {
	if st := shared.StatusOf(err); st != 0 {
		return st
	}
	return def
}

// postJSON forwards a JSON request to the leader.
func (f *forwarder) postJSON(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return f.post(ctx, path, "application/json", body, out)
}
