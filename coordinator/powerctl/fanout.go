// Package powerctl runs power commands against machines' BMCs for the coordinator: one
// machine or many (FanOut: a bounded, staggered fan-out, so a rack is not switched on in
// one inrush), each command timed out, measured and written on the machine's timeline
// with who asked and what the BMC answered.
package powerctl

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/internal/ctxtime"
)

// ErrNotStarted is the error of an Outcome whose target was never started because the
// fan-out's context ended first; errors.Is also matches the context's own error.
var ErrNotStarted = errors.New("not started: the fan-out was cancelled first")

// Outcome is what one target of a FanOut came to. Outcomes are in the order of the
// targets given.
type Outcome[T any] struct {
	Target T
	// Err is what do returned (nil: it succeeded), a recovered panic of do, or, for a
	// target never started, an error matching both ErrNotStarted and the context's error.
	Err error
	// Started is when do was called for the target (zero if it never started); Took is
	// how long do ran.
	Started time.Time
	Took    time.Duration
}

// NotStarted reports whether the target was skipped because the context ended first.
func (o Outcome[T]) NotStarted() bool { return errors.Is(o.Err, ErrNotStarted) }

// FanOut calls do once for every target and returns one Outcome per target, in the
// targets' order, once every call has returned.
//
//   - At most batch calls run at once (batch < 1 counts as 1).
//   - Calls start in the targets' order, one at a time: the call for targets[i+1] is
//     started once the one for targets[i] has started (Outcome.Started is in order) and
//     at least stagger later (stagger ≤ 0: no wait), so a rack's power-ons spread out
//     and never start in one inrush.
//   - When ctx ends, no further call starts: the targets not yet started get an Outcome
//     whose Err matches ErrNotStarted and ctx.Err(); calls under way are given ctx (each
//     do should honour it) and are waited for.
//   - A panic in do is the Outcome's Err for that target; the other targets go on.
func FanOut[T any](ctx context.Context, targets []T, batch int, stagger time.Duration, do func(context.Context, T) error) []Outcome[T] {
	return FanOutEach(ctx, targets, batch, stagger, do, nil)
}

// FanOutEach is FanOut that also calls each with every Outcome as soon as its call
// returns (or, for a target never started, once the fan-out stops starting), for progress
// a person can watch. Calls of each are serialized: each needs no lock of its own. each
// may be nil.
func FanOutEach[T any](ctx context.Context, targets []T, batch int, stagger time.Duration, do func(context.Context, T) error, each func(Outcome[T])) []Outcome[T] {
	if batch < 1 {
		batch = 1
	}
	out := make([]Outcome[T], len(targets))
	for i, t := range targets {
		out[i].Target = t
	}
	var eachMu sync.Mutex
	report := func(i int) {
		if each == nil {
			return
		}
		eachMu.Lock()
		defer eachMu.Unlock()
		each(out[i])
	}

	slots := make(chan struct{}, batch)
	var wg sync.WaitGroup
	next := 0
start:
	for ; next < len(targets); next++ {
		if next > 0 && stagger > 0 {
			if ctxtime.Sleep(ctx, stagger) != nil {
				break
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break start
		}
		if ctx.Err() != nil {
			break // a slot freed in the instant ctx ended: start nothing more
		}
		began := make(chan struct{})
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-slots }()
			defer report(i)
			defer func() {
				if p := recover(); p != nil {
					out[i].Took = time.Since(out[i].Started)
					out[i].Err = fmt.Errorf("power fan-out: panic: %v", p)
				}
			}()
			out[i].Started = time.Now()
			close(began)
			err := do(ctx, out[i].Target)
			out[i].Took = time.Since(out[i].Started)
			out[i].Err = err
		}(next)
		<-began
	}
	if next < len(targets) {
		skipped := fmt.Errorf("%w: %w", ErrNotStarted, ctx.Err())
		for i := next; i < len(targets); i++ {
			out[i].Err = skipped
			report(i)
		}
	}
	wg.Wait()
	return out
}
