// Package reboot runs reboot steps. The reboot is scheduled, not done on the spot: Run
// flushes the disks and returns success, so that the Runner can report the step
// succeeded, and the machine restarts a moment later. A reboot inside Run would cut off
// that report and leave the step "running" on the coordinator for ever.
package reboot

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

// Executor runs reboot steps.
type Executor struct {
	// Reboot restarts the machine: boot.Reboot in the RAM agent, a recorder in tests.
	Reboot func() error
	// Delay between reporting success and rebooting, for the report to reach the
	// coordinator; default 3s. A report that takes longer is not lost for good: the
	// machine's first check-in from disk tells the coordinator the rest.
	Delay  time.Duration
	Logger *slog.Logger

	// schedule runs f after d: time.AfterFunc, or in tests a recorder that lets the test
	// decide when the moment has come.
	schedule func(d time.Duration, f func())
}

// Run flushes the disks and schedules the reboot.
func (e *Executor) Run(_ context.Context, s shared.Step, _ func(shared.Progress)) (shared.StepStatus, error) {
	if s.Reboot == nil {
		return "", step.Permanent(fmt.Errorf("step %s has no reboot payload", s.Name))
	}
	if e.Reboot == nil {
		return "", step.Permanent(fmt.Errorf("this agent cannot reboot the machine (no reboot function)"))
	}
	log := step.LoggerOr(e.Logger)
	delay := e.Delay
	if delay <= 0 {
		delay = 3 * time.Second
	}
	unix.Sync() // the image and anything else written must be on disk before the restart
	log.Info("rebooting", "in", delay)
	schedule := e.schedule
	if schedule == nil {
		schedule = func(d time.Duration, f func()) { time.AfterFunc(d, f) }
	}
	schedule(delay, func() {
		if err := e.Reboot(); err != nil {
			log.Error("reboot failed; power-cycle the machine (it boots from disk next)", "err", err)
		}
	})
	return shared.StepSucceeded, nil
}
