package testenv

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// ErrNotYet is what a check returns when there is nothing more useful to say than that
// its condition does not hold yet.
var ErrNotYet = errors.New("not yet")

// Poll calls check until it returns nil, ctx ends or within has passed, and returns nil or
// an error that names what was awaited and the last thing check reported. It is the one
// way tests and test harnesses wait: never sleep and hope.
//
// The interval starts at 5 ms and doubles to 250 ms, so a fast condition costs little
// and a slow one does not spin.
func Poll(ctx context.Context, within time.Duration, what string, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	interval := 5 * time.Millisecond
	for {
		last := check()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waited %s for %s; last seen: %w", within, what, last)
		case <-time.After(interval):
		}
		interval = min(2*interval, 250*time.Millisecond)
	}
}

// Eventually is Poll for a test: it fails t (Fatal) with what was awaited and the last
// thing check reported when the condition does not hold within the deadline.
func Eventually(t testing.TB, within time.Duration, what string, check func() error) {
	t.Helper()
	if err := Poll(t.Context(), within, what, check); err != nil {
		t.Fatal(err)
	}
}

// Holds adapts a condition without a better report to a check for Poll and Eventually;
// seen, when not nil, describes what the condition looked at (shown on failure).
func Holds(cond func() bool, seen func() string) func() error {
	return func() error {
		if cond() {
			return nil
		}
		if seen != nil {
			return fmt.Errorf("%w: %s", ErrNotYet, seen())
		}
		return ErrNotYet
	}
}
