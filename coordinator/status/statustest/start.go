package statustest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
)

// Start runs an in-process coordinator with its data in dir that plans 50 ms after the
// last change (at most a second later), tuned by tune, and stops it when the test ends.
func Start(t testing.TB, dir string, tune ...func(*coordinator.DaemonConfig)) *coordinatortest.InProcess {
	t.Helper()
	dc := coordinator.DaemonConfig{Plan: coordinator.PlanOptions{Settle: 50 * time.Millisecond, MaxWait: time.Second}}
	for _, f := range tune {
		f(&dc)
	}
	c, err := coordinatortest.StartInProcess(context.Background(), dir, slog.New(slog.NewTextHandler(io.Discard, nil)), dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// Planned registers n machines (numbered from 1) with the labels labels(i) gives,
// applies the simulated role and waits until none of them is discovered any more.
func Planned(ctx context.Context, c *coordinatortest.InProcess, n int, labels func(i int) map[string]string) (*Fleet, error) {
	f, err := Register(ctx, c, 1, n, labels)
	if err != nil {
		return nil, err
	}
	if err := f.ApplyRole(ctx); err != nil {
		return nil, err
	}
	return f, f.WaitPlanned(ctx, f.Machines, 30*time.Second)
}
