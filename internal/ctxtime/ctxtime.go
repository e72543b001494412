// Package ctxtime waits as time.Sleep does, but gives up when a context ends: the agent's
// retries and polls and the fleet simulator's step durations all wait this way.
package ctxtime

import (
	"context"
	"time"
)

// Sleep waits d or until ctx ends, whichever is first, and returns ctx.Err() in the
// second case.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
