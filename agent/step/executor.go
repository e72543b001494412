// Package step runs a machine's plan: one Executor per step kind, and a Runner that walks
// the steps of a phase in order, reports each one to the coordinator, retries what is safe
// to retry, and keeps a local journal so that an agent restart resumes where it stopped.
//
// The executors themselves live in sub-packages (disk, image, bootcfg, reboot, swarm);
// they know nothing about reporting or retries, only how to do one step idempotently.
package step

import (
	"context"
	"errors"

	"github.com/rivetmetal/rivet/shared"
)

// Executor carries out one kind of step. Run returns StepSucceeded when it did the work and
// StepSkipped when the work was already done (for example the disk already holds the
// image). It must be safe to call again after an interrupted run. A returned error wrapping
// Permanent is not retried. progress may be called often; the Runner throttles it.
type Executor interface {
	Run(ctx context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error)
}

// ExecutorFunc adapts a function to Executor.
type ExecutorFunc func(ctx context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error)

// Run calls f.
func (f ExecutorFunc) Run(ctx context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error) {
	return f(ctx, s, progress)
}

// permanentError marks an error that retrying cannot fix (wrong disk, bad digest).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err (or anything it wraps) was marked Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// hintError carries what an operator can do about an error.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// WithHint attaches an operator hint to err; the Runner reports it next to the error.
// WithHint(nil, ...) is nil.
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, hint: hint}
}

// HintOf returns the outermost hint attached to err, or "".
func HintOf(err error) string {
	var h *hintError
	if errors.As(err, &h) {
		return h.hint
	}
	return ""
}
