package main

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/rivetmetal/rivet/agent"
	"github.com/rivetmetal/rivet/agent/config"
	"github.com/rivetmetal/rivet/shared"
)

// keyTracker is a slog handler that records a key added by With when a logger up the
// chain already has it: the log line would show it twice (step=swarm step=swarm).
type keyTracker struct {
	keys    []string
	mu      *sync.Mutex
	repeats *[]string
}

func (k keyTracker) Enabled(context.Context, slog.Level) bool  { return true }
func (k keyTracker) Handle(context.Context, slog.Record) error { return nil }
func (k keyTracker) WithGroup(string) slog.Handler             { return keyTracker{mu: k.mu, repeats: k.repeats} }
func (k keyTracker) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := keyTracker{keys: slices.Clone(k.keys), mu: k.mu, repeats: k.repeats}
	for _, a := range attrs {
		if slices.Contains(out.keys, a.Key) {
			k.mu.Lock()
			*k.repeats = append(*k.repeats, a.Key)
			k.mu.Unlock()
		}
		out.keys = append(out.keys, a.Key)
	}
	return out
}

// TestExecutorsLogEachKeyOnce: the step executors' loggers are wrapped once per key, the
// executors' own With included.
func TestExecutorsLogEachKeyOnce(t *testing.T) {
	var repeats []string
	log := slog.New(keyTracker{mu: &sync.Mutex{}, repeats: &repeats})
	ag := agent.New(config.Config{Mode: shared.ModeService}, agent.Deps{Logger: log})
	ex := executors("m-0123456789abcdef", nil, shared.ModeService, "", "unix:///nonexistent/docker.sock", ag, log)
	if ex[shared.StepSwarm] == nil {
		t.Fatal("no swarm executor")
	}
	if len(repeats) > 0 {
		t.Errorf("keys added twice to one logger: %q", repeats)
	}
}
