// Package bootcfg runs bootcfg steps: it records, on the coordinators, what the boot
// services answer this machine at its next network boot. After the image is written the
// plan sets "disk", so the next PXE boot falls through to the local disk instead of
// wiping it again. The decision lives in the replicated state, not on the machine.
package bootcfg

import (
	"context"
	"fmt"
	"net/http"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

// Booter records a machine's next boot answer; *shared.Client satisfies it.
type Booter interface {
	SetBoot(ctx context.Context, id shared.MachineID, b shared.BootTarget) error
}

// Executor runs bootcfg steps for machine ID. Setting the same answer twice is harmless,
// so a rerun simply sets it again.
type Executor struct {
	ID     shared.MachineID
	Booter Booter
}

// Run records the step's boot target.
func (e *Executor) Run(ctx context.Context, s shared.Step, _ func(shared.Progress)) (shared.StepStatus, error) {
	if s.BootCfg == nil || !s.BootCfg.Boot.Valid() {
		return "", step.Permanent(fmt.Errorf("step %s has no valid bootcfg payload", s.Name))
	}
	err := e.Booter.SetBoot(ctx, e.ID, s.BootCfg.Boot)
	if err == nil {
		return shared.StepSucceeded, nil
	}
	err = fmt.Errorf("recording next boot %q on the coordinator: %w", s.BootCfg.Boot, err)
	// A refusal (bad token, unknown machine) stays a refusal; a coordinator that is down
	// or electing a leader is worth another try.
	if code := shared.StatusOf(err); code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests {
		return "", step.Permanent(err)
	}
	return "", err
}
