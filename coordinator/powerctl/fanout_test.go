package powerctl

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestFanOutBatchBound: never more than batch calls at once, and the bound is reached
// (the calls hold until batch of them are in flight), started in the targets' order.
func TestFanOutBatchBound(t *testing.T) {
	const n, batch = 23, 5
	targets := make([]int, n)
	for i := range targets {
		targets[i] = i
	}
	var (
		mu       sync.Mutex
		inFlight int
		maxSeen  int
		order    []int
	)
	full := make(chan struct{}) // closed when batch calls are in flight the first time
	var fullOnce sync.Once
	outs := FanOut(context.Background(), targets, batch, 0, func(ctx context.Context, i int) error {
		mu.Lock()
		inFlight++
		order = append(order, i)
		if inFlight > maxSeen {
			maxSeen = inFlight
		}
		if inFlight == batch {
			fullOnce.Do(func() { close(full) })
		}
		mu.Unlock()
		<-full
		mu.Lock()
		inFlight--
		mu.Unlock()
		if i%7 == 3 {
			return errors.New("boom")
		}
		return nil
	})
	if maxSeen != batch {
		t.Fatalf("max concurrency %d, want %d", maxSeen, batch)
	}
	for i, o := range outs {
		if o.Target != i {
			t.Fatalf("outcome %d is for target %d", i, o.Target)
		}
		if (i%7 == 3) != (o.Err != nil) || o.NotStarted() || o.Started.IsZero() {
			t.Fatalf("outcome %d: %+v", i, o)
		}
		if i > 0 && o.Started.Before(outs[i-1].Started) {
			t.Fatalf("target %d started before target %d", i, i-1)
		}
	}
}

// TestFanOutStaggerOrder: with a stagger and batch 1 or many, calls start in order, one
// after the other; each sees the outcomes as they come, never two at once.
func TestFanOutStaggerOrder(t *testing.T) {
	for _, batch := range []int{0, 1, 3, 50} {
		targets := []string{"a", "b", "c", "d", "e", "f"}
		var mu sync.Mutex
		var order []string
		var eachBusy, eachOverlap bool
		var reported int
		outs := FanOutEach(context.Background(), targets, batch, time.Millisecond, func(ctx context.Context, s string) error {
			mu.Lock()
			order = append(order, s)
			mu.Unlock()
			return nil
		}, func(o Outcome[string]) {
			if eachBusy {
				eachOverlap = true
			}
			eachBusy = true
			reported++
			eachBusy = false
		})
		if len(order) != len(targets) || !slices.Equal(sorted(order), targets) || reported != len(targets) || eachOverlap {
			t.Fatalf("batch %d: order %v, reported %d, overlap %v", batch, order, reported, eachOverlap)
		}
		for i := range targets {
			if outs[i].Target != targets[i] || outs[i].Err != nil {
				t.Fatalf("batch %d: start order %v, outcomes %+v", batch, order, outs)
			}
			if i > 0 && outs[i].Started.Before(outs[i-1].Started) {
				t.Fatalf("batch %d: %s started before %s", batch, targets[i], targets[i-1])
			}
		}
	}
}

// TestFanOutCancel: once the context ends nothing more starts; the rest are reported as
// not started, with the context's error; calls under way see the cancellation.
func TestFanOutCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	targets := []int{0, 1, 2, 3, 4, 5, 6, 7}
	var mu sync.Mutex
	started := map[int]bool{}
	outs := FanOut(ctx, targets, 2, 0, func(ctx context.Context, i int) error {
		mu.Lock()
		started[i] = true
		mu.Unlock()
		if i == 1 {
			cancel()
		}
		<-ctx.Done()
		return ctx.Err()
	})
	if len(started) != 2 {
		t.Fatalf("started %v, want only the first batch of 2", started)
	}
	for i, o := range outs {
		if i < 2 {
			if !errors.Is(o.Err, context.Canceled) || o.NotStarted() {
				t.Fatalf("outcome %d: %v, want the call's own cancellation", i, o.Err)
			}
			continue
		}
		if !o.NotStarted() || !errors.Is(o.Err, context.Canceled) || !o.Started.IsZero() {
			t.Fatalf("outcome %d: %+v, want not started", i, o)
		}
	}
}

// TestFanOutPanic: a panicking call is its target's error; the others go on.
func TestFanOutPanic(t *testing.T) {
	outs := FanOut(context.Background(), []int{0, 1, 2}, 3, 0, func(ctx context.Context, i int) error {
		if i == 1 {
			panic("bad driver")
		}
		return nil
	})
	if outs[0].Err != nil || outs[1].Err == nil || outs[2].Err != nil {
		t.Fatalf("outcomes %+v", outs)
	}
	if got := FanOut(context.Background(), []int(nil), 3, time.Second, func(context.Context, int) error { return nil }); len(got) != 0 {
		t.Fatalf("no targets: %v", got)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
