// Package forward sends a follower's writes to the leader. A follower cannot append to
// the Raft log itself: it posts the encoded command to the leader's internal endpoint
// over mutual TLS, batched with whatever else is waiting, and hands each command's
// outcome back to its caller.
//
// What the caller is told depends on how far the request got, which the forwarder knows
// from net/http/httptrace's WroteRequest:
//
//   - the request was never written (no leader known, connection refused, TLS failed):
//     state.ErrNotApplied, and the forwarder tries again until the caller's deadline;
//   - the leader answered that it is not the leader (421): the same, labelled
//     state.ErrNoLeader once the deadline passes;
//   - the request was written and then the connection was lost, or no answer came in
//     time: state.ErrOutcomeUnknown. The leader may have committed the command, so it
//     is never resent: the caller is told, and must read before it tries again;
//   - the leader answered: each command's own outcome, a result or the leader's typed
//     error (a *state.Rejected, or one of the sentinels) passed through as is.
package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// Limits of one forwarded batch. Under load, commands queue while a batch travels, so
// batches grow by themselves: no timer.
const (
	// Senders is how many batches may be in flight to the leader at once.
	Senders = 4
	// MaxBatch is the most commands in one batch; the leader refuses more.
	MaxBatch = 256
	// MaxBytes bounds one forwarded batch; the internal endpoint accepts twice that.
	MaxBytes = 8 << 20
)

// Config is what the forwarder needs from the coordinator.
type Config struct {
	// Leader returns the leader's API base URL ("https://host:port"), or an error
	// wrapping state.ErrNoLeader while there is none (or it is not known yet).
	Leader func() (string, error)
	// Client returns the HTTP client to reach the leader with (mutual TLS).
	Client func() (*http.Client, error)
	// Token returns the bearer token of the internal endpoint.
	Token func() string
	// BatchTimeout bounds one batch's round trip (default 30 s).
	BatchTimeout time.Duration
}

// Forwarder sends commands to the leader. Close stops its goroutines.
type Forwarder struct {
	cfg   Config
	queue chan *pending
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// pending is one forwarded command waiting for its outcome.
type pending struct {
	data []byte
	out  chan outcome // buffered: a sender never blocks on a caller that left
}

type outcome struct {
	res state.Result
	err error
}

// New starts a forwarder.
func New(cfg Config) *Forwarder {
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 30 * time.Second
	}
	f := &Forwarder{cfg: cfg, queue: make(chan *pending, 4096), done: make(chan struct{})}
	for range Senders {
		f.wg.Add(1)
		go f.sendLoop()
	}
	return f
}

// Close stops the senders, after the batches in flight are answered. Commands still
// queued are answered state.ErrNotApplied; Apply after Close returns it at once.
func (f *Forwarder) Close() {
	f.once.Do(func() { close(f.done) })
	f.wg.Wait()
	for {
		select {
		case p := <-f.queue:
			p.out <- outcome{err: fmt.Errorf("%w: the forwarder is closed", state.ErrNotApplied)}
		default:
			return
		}
	}
}

// Apply forwards one encoded command to the leader and returns its outcome. It tries
// again, with backoff, only while the command was certainly not applied
// (state.ErrNotApplied), until ctx ends.
func (f *Forwarder) Apply(ctx context.Context, data []byte) (state.Result, error) {
	for attempt := 0; ; attempt++ {
		res, err := f.applyOnce(ctx, data)
		if !errors.Is(err, state.ErrNotApplied) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return state.Result{}, err
		case <-f.done:
			return state.Result{}, err
		case <-time.After(Backoff(attempt)):
		}
	}
}

// Backoff is the wait before attempt+1 of a write that was certainly not applied.
func Backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 4)
	return min(d, time.Second)
}

// leader asks who leads; no answer is a write certainly not applied.
func (f *Forwarder) leader() (string, error) {
	base, err := f.cfg.Leader()
	if err != nil && !errors.Is(err, state.ErrNotApplied) {
		err = fmt.Errorf("%w: %w", state.ErrNotApplied, err)
	}
	return base, err
}

func (f *Forwarder) applyOnce(ctx context.Context, data []byte) (state.Result, error) {
	if _, err := f.leader(); err != nil {
		return state.Result{}, err
	}
	p := &pending{data: data, out: make(chan outcome, 1)}
	select {
	case <-f.done:
		return state.Result{}, fmt.Errorf("%w: the forwarder is closed", state.ErrNotApplied)
	default:
	}
	select {
	case f.queue <- p:
	case <-ctx.Done():
		return state.Result{}, fmt.Errorf("%w: %w", state.ErrNotApplied, ctx.Err())
	}
	select {
	case o := <-p.out:
		return o.res, o.err
	case <-f.done:
		// Closed: the senders answer the batch they are sending, then stop; a command
		// they did not take was never sent.
		f.wg.Wait()
		select {
		case o := <-p.out:
			return o.res, o.err
		default:
			return state.Result{}, fmt.Errorf("%w: the forwarder is closed", state.ErrNotApplied)
		}
	case <-ctx.Done():
		// The batch may be on its way or applied already: nobody can say now.
		return state.Result{}, fmt.Errorf("%w: gave up waiting for the leader's answer: %w", state.ErrOutcomeUnknown, ctx.Err())
	}
}

// sendLoop takes a command, adds whatever else is already queued, and sends the batch.
func (f *Forwarder) sendLoop() {
	defer f.wg.Done()
	for {
		var first *pending
		select {
		case <-f.done:
			return
		case first = <-f.queue:
		}
		batch, size := []*pending{first}, len(first.data)
	fill:
		for len(batch) < MaxBatch && size < MaxBytes/2 {
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

// sendBatch posts one batch and answers every command in it.
func (f *Forwarder) sendBatch(batch []*pending) {
	req := Batch{Commands: make([][]byte, len(batch))}
	for i, p := range batch {
		req.Commands[i] = p.data
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.BatchTimeout)
	defer cancel()
	var out Results
	err := f.PostJSON(ctx, shared.PathInternalApply, req, &out)
	if err == nil && len(out.Results) != len(batch) {
		err = fmt.Errorf("%w: the leader answered %d results for %d commands", state.ErrOutcomeUnknown, len(out.Results), len(batch))
	}
	for i, p := range batch {
		if err != nil {
			p.out <- outcome{err: err}
			continue
		}
		res, itemErr := out.Results[i].Outcome()
		p.out <- outcome{res: res, err: itemErr}
	}
}

// PostJSON sends one request to the leader, once, and decodes its answer into out. Its
// errors say how far the request got: state.ErrNotApplied (wrapping state.ErrNoLeader
// when the leader is unknown or says it no longer leads) before it was written,
// state.ErrOutcomeUnknown after; the leader's non-2xx answer comes back as
// *shared.APIError.
func (f *Forwarder) PostJSON(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	base, err := f.leader()
	if err != nil {
		return err
	}
	client, err := f.cfg.Client()
	if err != nil {
		return fmt.Errorf("%w: %v", state.ErrNotApplied, err)
	}
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
		// A write that failed left part of the body in this process: the leader
		// decodes a batch only whole, so it cannot have applied it.
		if info.Err == nil {
			wrote.Store(true)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+f.cfg.Token())
	resp, err := client.Do(req)
	if err != nil {
		if wrote.Load() {
			return fmt.Errorf("%w: the connection to leader %s was lost after the request was sent: %v", state.ErrOutcomeUnknown, base, err)
		}
		return fmt.Errorf("%w: forwarding to leader %s: %v", state.ErrNotApplied, base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusMisdirectedRequest {
		// The node we thought leads does not any more, and applied nothing: ask again.
		_, _ = io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("%w: %w: %s is no longer the leader", state.ErrNoLeader, state.ErrNotApplied, base)
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
	if err := jsonv2.UnmarshalRead(resp.Body, out); err != nil {
		return fmt.Errorf("%w: reading the leader's answer: %v", state.ErrOutcomeUnknown, err)
	}
	return nil
}
