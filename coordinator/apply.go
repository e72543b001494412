package coordinator

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/fsm"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// Apply replicates one command and returns its result. On a follower the command is
// forwarded to the leader. A nil error means the command is committed: it survives the
// loss of the leader and a restart of every coordinator.
func (s *Server) Apply(ctx context.Context, body any) (state.Result, error) {
	data, err := fsm.Encode(s.sealSecrets(body))
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
			switch {
			case errors.Is(err, raft.ErrNotLeader):
				return state.Result{}, fmt.Errorf("%w: %v", errRetry, err)
			case errors.Is(err, raft.ErrLeadershipLost):
				// Under load leadership can move mid-commit: not a server fault, and the
				// entry may still be committed by the next leader.
				return state.Result{}, shared.Errorf(http.StatusServiceUnavailable, shared.CodeOutcomeUnknown,
					"the leader changed while this write was in flight; read the object back and retry if the change is missing",
					"leadership lost before the write was confirmed")
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

// forwarder sends commands from a follower to the leader's internal endpoint, over TLS
// with this node's certificate as client certificate (the leader checks it).
type forwarder struct {
	s      *Server
	mu     sync.Mutex
	client *http.Client // made on first use
	queue  chan *pending
}

// pending is one forwarded command waiting for its result.
type pending struct {
	data []byte
	done chan forwardOutcome
}

type forwardOutcome struct {
	res state.Result
	err error
}

// forwardSenders is how many batches may be in flight to the leader at once. Under
// load, commands queue while a batch travels, so batches grow by themselves: no timer.
const (
	forwardSenders  = 4
	forwardMaxBatch = 256
	// ForwardMaxBytes bounds one forwarded batch; the internal endpoint accepts twice that.
	ForwardMaxBytes = 8 << 20
)

func newForwarder(s *Server) *forwarder {
	f := &forwarder{s: s, queue: make(chan *pending, 4096)}
	for range forwardSenders {
		go f.sendLoop()
	}
	return f
}

// sendLoop takes a command, adds whatever else is already queued, and sends the batch.
func (f *forwarder) sendLoop() {
	for first := range f.queue {
		batch, size := []*pending{first}, len(first.data)
	fill:
		for len(batch) < forwardMaxBatch && size < ForwardMaxBytes/2 {
			select {
			case p := <-f.queue:
				batch = append(batch, p)
				size += len(p.data)
			default:
				break fill
			}
		}
		f.sendBatch(batch)
	}
}

func (f *forwarder) sendBatch(batch []*pending) {
	req := forwardBatch{Commands: make([][]byte, len(batch))}
	for i, p := range batch {
		req.Commands[i] = p.data
	}
	var out forwardBatchResult
	ctx, cancel := context.WithTimeout(context.Background(), f.s.cfg.ApplyTimeout+5*time.Second)
	defer cancel()
	err := f.postJSON(ctx, shared.PathInternalApply, req, &out)
	if err == nil && len(out.Results) != len(batch) {
		err = fmt.Errorf("leader answered %d results for %d commands", len(out.Results), len(batch))
	}
	for i, p := range batch {
		if err != nil {
			p.done <- forwardOutcome{err: err}
			continue
		}
		r := out.Results[i]
		if r.Result.Err != nil {
			r.Result.Err.Status = r.Status
		}
		var itemErr error
		if r.Error != nil {
			r.Error.Status = r.Status
			itemErr = r.Error
			if r.Status == http.StatusMisdirectedRequest || r.Status == http.StatusServiceUnavailable {
				itemErr = fmt.Errorf("%w: %v", errRetry, r.Error)
			}
		}
		p.done <- forwardOutcome{res: r.Result, err: itemErr}
	}
}

// forwardBatch is what a follower sends the leader.
type forwardBatch struct {
	Commands [][]byte `json:"commands"`
}

// forwardBatchResult holds one outcome per command, in order.
type forwardBatchResult struct {
	Results []forwardedResult `json:"results"`
}

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
	tlsCfg, err := shared.PinnedTLSConfig(f.s.CAFingerprint())
	if err != nil {
		return nil, err
	}
	tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return f.s.id.cert.Get()
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 64,
		IdleConnTimeout: time.Minute, ForceAttemptHTTP2: true}
	f.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return f.client, nil
}

// forwardedResult carries a Result across the wire with its HTTP status (APIError's
// Status is not part of its JSON).
type forwardedResult struct {
	Result state.Result     `json:"result"`
	Status int              `json:"status,omitempty"`
	Error  *shared.APIError `json:"error,omitempty"` // the command was not applied
}

// apply queues a command for the leader and waits for its outcome.
func (f *forwarder) apply(ctx context.Context, data []byte) (state.Result, error) {
	if _, err := f.leaderAPI(); err != nil {
		return state.Result{}, err
	}
	p := &pending{data: data, done: make(chan forwardOutcome, 1)}
	select {
	case f.queue <- p:
	case <-ctx.Done():
		return state.Result{}, ctx.Err()
	}
	select {
	case out := <-p.done:
		return out.res, out.err
	case <-ctx.Done():
		return state.Result{}, ctx.Err()
	}
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
	return jsonv2.UnmarshalRead(resp.Body, out)
}

// HandleInternalApply is the leader's side of forwarding: it applies a batch of commands
// a follower sent, concurrently, so Raft commits them together. A node that is not the
// leader answers 421 so the follower asks again.
func (s *Server) HandleInternalApply(ctx context.Context, body []byte) (resultJSON []byte, status int) {
	if s.raft.State() != raft.Leader {
		return nil, http.StatusMisdirectedRequest
	}
	var batch forwardBatch
	if err := jsonv2.Unmarshal(body, &batch); err != nil || len(batch.Commands) > forwardMaxBatch {
		return nil, http.StatusBadRequest
	}
	out := forwardBatchResult{Results: make([]forwardedResult, len(batch.Commands))}
	var wg sync.WaitGroup
	for i, data := range batch.Commands {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.Results[i] = s.applyForwarded(ctx, data)
		}()
	}
	wg.Wait()
	b, _ := json.Marshal(out)
	return b, http.StatusOK
}

func (s *Server) applyForwarded(ctx context.Context, data []byte) forwardedResult {
	if s.raft.State() != raft.Leader {
		return forwardedResult{Status: http.StatusMisdirectedRequest,
			Error: &shared.APIError{Code: shared.CodeNoLeader, Message: "no longer the leader"}}
	}
	res, err := s.ApplyEncoded(ctx, data)
	if err != nil {
		st := statusOr(err, http.StatusServiceUnavailable)
		return forwardedResult{Status: st, Error: &shared.APIError{Code: shared.CodeNoLeader, Message: err.Error()}}
	}
	out := forwardedResult{Result: res}
	if res.Err != nil {
		out.Status = res.Err.Status
	}
	return out
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
