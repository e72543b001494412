package reboot

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

var rebootStep = shared.Step{Name: "reboot", Kind: shared.StepReboot, Phase: shared.PhaseRAM, Reboot: &shared.RebootStep{}}

// Run returns success with the reboot only scheduled; the reboot happens when the
// scheduled moment comes, which the test decides, so the order is not left to a timer.
func TestReportsFirstThenReboots(t *testing.T) {
	calls := 0
	var (
		after  time.Duration
		reboot func()
	)
	e := &Executor{Reboot: func() error { calls++; return nil }, Delay: 7 * time.Second,
		schedule: func(d time.Duration, f func()) { after, reboot = d, f }}
	st, err := e.Run(context.Background(), rebootStep, nil)
	if err != nil || st != shared.StepSucceeded {
		t.Fatalf("run: %v %v", st, err)
	}
	if calls != 0 {
		t.Fatal("rebooted before the step's success could be reported")
	}
	if reboot == nil || after != 7*time.Second {
		t.Fatalf("reboot scheduled %v later (scheduled: %t), want 7s", after, reboot != nil)
	}
	reboot()
	if calls != 1 {
		t.Fatalf("rebooted %d times, want once", calls)
	}
}

// Without a scheduler of its own the executor reboots on a real timer after Delay.
func TestRebootsAfterTheDelay(t *testing.T) {
	rebooted := make(chan struct{})
	e := &Executor{Reboot: func() error { close(rebooted); return nil }, Delay: time.Millisecond}
	if _, err := e.Run(context.Background(), rebootStep, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rebooted:
	case <-time.After(10 * time.Second):
		t.Fatal("never rebooted")
	}
}

func TestWithoutRebootFunctionFailsPermanently(t *testing.T) {
	_, err := (&Executor{}).Run(context.Background(), rebootStep, nil)
	if err == nil || !step.IsPermanent(err) {
		t.Fatalf("got %v", err)
	}
	_, err = (&Executor{Reboot: func() error { return errors.New("x") }}).Run(context.Background(),
		shared.Step{Name: "reboot", Kind: shared.StepReboot}, nil)
	if !step.IsPermanent(err) {
		t.Fatalf("no payload: %v", err)
	}
}
