package reboot

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

var rebootStep = shared.Step{Name: "reboot", Kind: shared.StepReboot, Phase: shared.PhaseRAM, Reboot: &shared.RebootStep{}}

func TestReportsFirstThenReboots(t *testing.T) {
	var calls atomic.Int32
	e := &Executor{Reboot: func() error { calls.Add(1); return nil }, Delay: 50 * time.Millisecond}
	st, err := e.Run(context.Background(), rebootStep, nil)
	if err != nil || st != shared.StepSucceeded {
		t.Fatalf("run: %v %v", st, err)
	}
	if calls.Load() != 0 {
		t.Fatal("rebooted before the step's success could be reported")
	}
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("never rebooted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if calls.Load() != 1 {
		t.Fatalf("rebooted %d times", calls.Load())
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
