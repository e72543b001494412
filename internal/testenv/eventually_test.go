package testenv

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	err := Poll(t.Context(), time.Minute, "third call", func() error {
		calls++
		if calls < 3 {
			return ErrNotYet
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestPollReportsWhatAndTheLastSeen(t *testing.T) {
	n := 0
	err := Poll(t.Context(), 30*time.Millisecond, "the disk", func() error {
		n++
		return errors.New("state=" + strings.Repeat("x", n))
	})
	if err == nil {
		t.Fatal("Poll of a condition that never holds returned nil")
	}
	msg := err.Error()
	if !strings.Contains(msg, "the disk") || !strings.Contains(msg, "state="+strings.Repeat("x", n)) {
		t.Fatalf("error %q does not name what was awaited and the last report", msg)
	}
}

func TestPollStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Poll(ctx, time.Hour, "never", func() error { return ErrNotYet }); err == nil {
		t.Fatal("Poll with a cancelled context returned nil")
	}
}

func TestHoldsShowsWhatItSaw(t *testing.T) {
	check := Holds(func() bool { return false }, func() string { return "3 of 5" })
	if err := check(); !errors.Is(err, ErrNotYet) || !strings.Contains(err.Error(), "3 of 5") {
		t.Fatalf("Holds check = %v", err)
	}
	if err := Holds(func() bool { return true }, nil)(); err != nil {
		t.Fatalf("Holds of a true condition = %v", err)
	}
}
