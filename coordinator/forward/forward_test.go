package forward

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// leader is a loopback stand-in for the leader's internal endpoint: it counts the
// requests it saw and the commands it applied, and answers as its case says.
type leader struct {
	srv      *httptest.Server
	requests atomic.Int64 // batches that reached the handler whole
	applied  atomic.Int64 // commands "committed"
}

func startLeader(t *testing.T, handle func(l *leader, w http.ResponseWriter, r *http.Request)) *leader {
	t.Helper()
	l := &leader{}
	l.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != shared.PathInternalApply || r.Header.Get("Authorization") != "Bearer internal" {
			http.Error(w, "wrong path or token", http.StatusBadRequest)
			return
		}
		l.requests.Add(1)
		handle(l, w, r)
	}))
	l.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	l.srv.Start()
	t.Cleanup(l.srv.Close)
	return l
}

// serve answers like the real leader (Serve), applying each command with apply.
func serve(apply func(data []byte) (state.Result, error)) func(*leader, http.ResponseWriter, *http.Request) {
	return func(l *leader, w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		out, status := Serve(r.Context(), body, func() bool { return true },
			func(_ context.Context, data []byte) (state.Result, error) {
				res, err := apply(data)
				if err == nil {
					l.applied.Add(1)
				}
				return res, err
			})
		if status != http.StatusOK {
			w.WriteHeader(status)
			return
		}
		_, _ = w.Write(out)
	}
}

// closedURL is the address of a port nothing listens on any more.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}

func newForwarder(t *testing.T, leaderURL func() (string, error)) *Forwarder {
	t.Helper()
	f := New(Config{
		Leader:       leaderURL,
		Client:       func() (*http.Client, error) { return &http.Client{}, nil },
		Token:        func() string { return "internal" },
		BatchTimeout: 5 * time.Second,
	})
	t.Cleanup(f.Close)
	return f
}

// hangUp is a leader that reads the whole batch (and may commit it), then dies before
// it answers.
func hangUp(l *leader, w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	l.applied.Add(1)
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		_ = conn.Close()
	}
}

func notLeader(_ *leader, w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusMisdirectedRequest)
}

// applyAs is an apply function answering outcomes in turn (the last one repeats).
func applyAs(errs ...error) func([]byte) (state.Result, error) {
	var n atomic.Int64
	return func([]byte) (state.Result, error) {
		err := errs[min(int(n.Add(1))-1, len(errs)-1)]
		if err != nil {
			return state.Result{}, err
		}
		return state.Result{Value: "done"}, nil
	}
}

// TestForwarderRetryDecisions is every answer the forwarder can get, with what the
// caller is told and how often the leader saw the command. Only a command certainly not
// applied (state.ErrNotApplied) is resent; one whose outcome is unknown is sent once
// and reported so.
func TestForwarderRetryDecisions(t *testing.T) {
	rejection := &state.Rejected{Kind: state.KindConflict, Rule: state.RuleAction, Reason: "retire m-1: it is ready", Subject: "m-1"}
	const anyCount = -1
	for _, tc := range []struct {
		name   string
		handle func(*leader, http.ResponseWriter, *http.Request) // nil: no leader process
		// reach is how the follower finds the leader: "up", "down" (a closed port),
		// "down-then-up" (two refused sends first), "none" (no leader elected).
		reach    string
		want     []error // errors.Is must hold for each; none: success
		wantNot  error   // errors.Is must not hold
		requests int     // batches the leader saw: exactly this many; -N (below anyCount): at least N
	}{
		{"success", serve(applyAs(nil)), "up", nil, nil, 1},
		{"leader rejected", serve(applyAs(rejection)), "up", []error{rejection}, state.ErrNotApplied, 1},
		{"leader unreachable before send", nil, "down", []error{state.ErrNotApplied}, state.ErrOutcomeUnknown, anyCount},
		{"leader unreachable before send, then back", serve(applyAs(nil)), "down-then-up", nil, nil, 1},
		{"connection lost after send", hangUp, "up", []error{state.ErrOutcomeUnknown}, state.ErrNotApplied, 1},
		{"leader says it is not the leader", notLeader, "up", []error{state.ErrNoLeader, state.ErrNotApplied}, nil, -2},
		{"no leader elected", nil, "none", []error{state.ErrNoLeader, state.ErrNotApplied}, nil, anyCount},
		{"leader stepped down before its log took it", serve(applyAs(errors.Join(state.ErrNoLeader, state.ErrNotApplied), nil)),
			"up", nil, nil, 2},
		{"leader lost leadership mid-commit", serve(applyAs(state.ErrOutcomeUnknown)), "up",
			[]error{state.ErrOutcomeUnknown}, state.ErrNotApplied, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l *leader
			if tc.handle != nil {
				l = startLeader(t, tc.handle)
			}
			down := closedURL(t)
			var asked atomic.Int64
			f := newForwarder(t, func() (string, error) {
				switch {
				case tc.reach == "none":
					return "", state.ErrNoLeader
				case tc.reach == "down", tc.reach == "down-then-up" && asked.Add(1) <= 4: // two asks a send
					return down, nil
				}
				return l.srv.URL, nil
			})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			res, err := f.Apply(ctx, []byte("\x01{}"))
			if len(tc.want) == 0 && (err != nil || res.Value != "done") {
				t.Fatalf("got %+v, %v; want the leader's result", res, err)
			}
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Fatalf("got %v; want it to be %v", err, want)
				}
			}
			if tc.wantNot != nil && errors.Is(err, tc.wantNot) {
				t.Fatalf("got %v; it must not say %v", err, tc.wantNot)
			}
			if l == nil || tc.requests == anyCount {
				return
			}
			switch n := l.requests.Load(); {
			case tc.requests < anyCount && n < -int64(tc.requests):
				t.Fatalf("the leader saw %d requests, want at least %d: the write was not asked again", n, -tc.requests)
			case tc.requests > 0 && n != int64(tc.requests):
				t.Fatalf("the leader saw %d requests, want exactly %d", n, tc.requests)
			}
		})
	}
}

// TestForwarderRefusesWritesOnceClosed: Close (which waits for its senders to stop)
// may be called twice, and a write after it is refused at once as not applied.
func TestForwarderRefusesWritesOnceClosed(t *testing.T) {
	f := New(Config{
		Leader: func() (string, error) { return "http://127.0.0.1:1", nil },
		Client: func() (*http.Client, error) { return &http.Client{}, nil },
		Token:  func() string { return "internal" },
	})
	f.Close()
	f.Close() // twice is fine
	_, err := f.Apply(context.Background(), []byte("\x01{}"))
	if !errors.Is(err, state.ErrNotApplied) {
		t.Fatalf("Apply after Close: %v, want not applied", err)
	}
}
