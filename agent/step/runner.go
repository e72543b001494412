package step

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/rivetmetal/rivet/internal/ctxtime"
	"github.com/rivetmetal/rivet/shared"
)

// Reporter sends step reports to the coordinator; *shared.Client satisfies it.
type Reporter interface {
	Report(ctx context.Context, id shared.MachineID, r *shared.StepReport) error
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	ID        shared.MachineID
	Reporter  Reporter
	Executors map[shared.StepKind]Executor
	// StateDir holds the step journal. In RAM mode it is on tmpfs and survives an agent
	// restart; after a power cut the coordinator's record and the image marker on the disk
	// take over. Empty keeps the journal in memory only.
	StateDir      string
	Logger        *slog.Logger
	ProgressEvery time.Duration // at most one progress report per interval; default 1s
	Retry         RetryPolicy
	// ReportTimeout bounds how long one report is retried while the coordinator does not
	// answer (a leader election, a restart); default 5m.
	ReportTimeout time.Duration
}

// Runner runs the steps of a plan; see RunPhase.
type Runner struct {
	cfg RunnerConfig
	log *slog.Logger
}

// NewRunner returns a Runner for cfg, filling in defaults.
func NewRunner(cfg RunnerConfig) *Runner {
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = time.Second
	}
	if cfg.ReportTimeout <= 0 {
		cfg.ReportTimeout = 5 * time.Minute
	}
	cfg.Retry = cfg.Retry.withDefaults()
	log := LoggerOr(cfg.Logger)
	return &Runner{cfg: cfg, log: log.With("machine", cfg.ID)}
}

// Failure is the error RunPhase returns when a step failed for good; it has been reported
// to the coordinator already.
type Failure struct {
	Step string
	Err  error
	Hint string
}

func (f *Failure) Error() string { return fmt.Sprintf("step %s failed: %v", f.Step, f.Err) }
func (f *Failure) Unwrap() error { return f.Err }

// defaultHint is what an operator is told when the executor had nothing more specific.
const defaultHint = "the agent log on the machine's console has details; fix the cause, " +
	"then retry the step (machine action \"retry\")"

// RunPhase runs the steps of view's plan that belong to phase, in plan order. A step is
// skipped when the coordinator already records it succeeded or skipped, or when the local
// journal says it finished for this plan generation (then the result is reported again,
// since the coordinator evidently missed it). Each step is reported running (with its
// attempt), then with throttled progress, then with its result. A failing step is retried
// with exponential backoff unless its error is Permanent; when it fails for good it is
// reported failed with a hint and RunPhase returns a *Failure without running later steps.
// When ctx ends mid-step, RunPhase returns ctx's error and reports nothing more: the step
// is resumed by the next call.
func (r *Runner) RunPhase(ctx context.Context, view *shared.PlanView, phase shared.Phase) error {
	if view == nil || view.Plan == nil {
		return errors.New("no plan to run: the coordinator has not planned this machine yet")
	}
	plan := view.Plan
	if err := plan.Validate(); err != nil {
		return fmt.Errorf("plan generation %d is invalid, refusing to run it: %w", plan.Generation, err)
	}
	if plan.MachineID != r.cfg.ID {
		return fmt.Errorf("plan is for machine %s, this is %s: refusing to run it", plan.MachineID, r.cfg.ID)
	}
	j, err := openJournal(r.cfg.StateDir, r.cfg.ID, plan.Generation)
	if err != nil {
		return err
	}
	recorded := map[string]shared.StepState{}
	for _, st := range view.Steps {
		recorded[st.Name] = st
	}
	for _, s := range plan.Steps {
		if s.Phase != phase {
			continue
		}
		if err := r.runStep(ctx, plan.Generation, j, s, recorded[s.Name]); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) runStep(ctx context.Context, gen uint64, j *journal, s shared.Step, known shared.StepState) error {
	log := r.log.With("step", s.Name, "kind", s.Kind, "generation", gen)
	if done(known.Status) {
		log.Debug("step already done per coordinator", "status", known.Status)
		return nil
	}
	entry, inJournal := j.lookup(s)
	if inJournal && done(entry.Status) {
		log.Info("step already done per local journal; reporting it again", "status", entry.Status)
		return r.report(ctx, &shared.StepReport{Generation: gen, Step: s.Name, Status: entry.Status, Attempt: entry.Attempt})
	}
	exec := r.cfg.Executors[s.Kind]
	if exec == nil {
		err := fmt.Errorf("this agent has no executor for step kind %q", s.Kind)
		return r.fail(ctx, gen, j, s, max(entry.Attempt, known.Attempt), nil, WithHint(err,
			"the step runs in the wrong phase or this agent build is too old: check the role and the agent version"))
	}
	base := max(entry.Attempt, known.Attempt)
	for try := 1; ; try++ {
		attempt := base + try
		if err := j.record(s, shared.StepRunning, attempt); err != nil {
			log.Warn("step journal not written; a restart will redo this step", "err", err)
		}
		if err := r.report(ctx, &shared.StepReport{Generation: gen, Step: s.Name, Status: shared.StepRunning, Attempt: attempt}); err != nil {
			return err
		}
		log.Info("step started", "attempt", attempt)
		started := time.Now()
		status, last, err := r.runOnce(ctx, gen, s, attempt, exec)
		if err == nil && status != shared.StepSucceeded && status != shared.StepSkipped {
			err = Permanent(fmt.Errorf("executor for %s returned status %q without an error (a bug in the agent)", s.Kind, status))
		}
		if err == nil {
			log.Info("step finished", "status", status, "attempt", attempt, "took", time.Since(started).Round(time.Millisecond))
			if jerr := j.record(s, status, attempt); jerr != nil {
				log.Warn("step journal not written; a restart will redo this step", "err", jerr)
			}
			return r.report(ctx, &shared.StepReport{Generation: gen, Step: s.Name, Status: status, Attempt: attempt, Progress: last})
		}
		if ctx.Err() != nil {
			log.Warn("step interrupted; it resumes on the next run", "attempt", attempt, "err", err)
			return ctx.Err()
		}
		if IsPermanent(err) || try >= r.cfg.Retry.MaxAttempts {
			return r.fail(ctx, gen, j, s, attempt, last, err)
		}
		wait := r.cfg.Retry.Backoff(try)
		log.Warn("step attempt failed; retrying", "attempt", attempt, "err", err, "wait", wait.Round(time.Millisecond))
		if err := ctxtime.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// runOnce runs the executor with a progress pump and returns the last progress seen.
func (r *Runner) runOnce(ctx context.Context, gen uint64, s shared.Step, attempt int, exec Executor) (status shared.StepStatus, last *shared.Progress, err error) {
	pump := newProgressPump(r.cfg.ProgressEvery, func(p shared.Progress) {
		rep := &shared.StepReport{Generation: gen, Step: s.Name, Status: shared.StepRunning, Attempt: attempt, Progress: &p}
		// Progress is a hint: one try, bounded, never holding up the step.
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := r.cfg.Reporter.Report(rctx, r.cfg.ID, rep); err != nil {
			r.log.Debug("progress report not delivered", "step", s.Name, "err", err)
		}
	})
	defer func() {
		last = pump.stop()
		if rec := recover(); rec != nil {
			err = Permanent(fmt.Errorf("executor for %s panicked: %v", s.Kind, rec))
		}
	}()
	status, err = exec.Run(ctx, s, pump.update)
	return status, nil, err
}

// fail records and reports step s as failed for good and returns a *Failure.
func (r *Runner) fail(ctx context.Context, gen uint64, j *journal, s shared.Step, attempt int, last *shared.Progress, err error) error {
	hint := HintOf(err)
	if hint == "" {
		hint = defaultHint
	}
	r.log.Error("step failed", "step", s.Name, "kind", s.Kind, "attempt", attempt, "err", err, "hint", hint)
	if jerr := j.record(s, shared.StepFailed, attempt); jerr != nil {
		r.log.Warn("step journal not written", "err", jerr)
	}
	rep := &shared.StepReport{Generation: gen, Step: s.Name, Status: shared.StepFailed, Attempt: attempt,
		Progress: last, Error: truncate(err.Error(), 4096), Hint: truncate(hint, 1024)}
	if rerr := r.report(ctx, rep); rerr != nil {
		return errors.Join(&Failure{Step: s.Name, Err: err, Hint: hint}, rerr)
	}
	return &Failure{Step: s.Name, Err: err, Hint: hint}
}

// report delivers rep, retrying while the coordinator is unreachable or answers with a
// server error, for up to ReportTimeout. A refusal (4xx: stale generation, bad token) is
// returned at once: retrying cannot change the answer.
func (r *Runner) report(ctx context.Context, rep *shared.StepReport) error {
	if err := rep.Validate(); err != nil {
		return fmt.Errorf("step %s: refusing to send an invalid report: %w", rep.Step, err)
	}
	giveUp := time.Now().Add(r.cfg.ReportTimeout)
	wait := RetryPolicy{Initial: 250 * time.Millisecond, Max: 10 * time.Second}
	for try := 1; ; try++ {
		err := r.cfg.Reporter.Report(ctx, r.cfg.ID, rep)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !retryableReport(err) {
			return fmt.Errorf("coordinator refused the %s report for step %s: %w", rep.Status, rep.Step, err)
		}
		d := wait.Backoff(try)
		if time.Now().Add(d).After(giveUp) {
			return fmt.Errorf("coordinator did not take the %s report for step %s within %v: %w",
				rep.Status, rep.Step, r.cfg.ReportTimeout, err)
		}
		r.log.Warn("report not delivered; retrying", "step", rep.Step, "status", rep.Status, "err", err, "wait", d.Round(time.Millisecond))
		if err := ctxtime.Sleep(ctx, d); err != nil {
			return err
		}
	}
}

func retryableReport(err error) bool {
	status := shared.StatusOf(err)
	return status == 0 || status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
}

func done(s shared.StepStatus) bool { return s == shared.StepSucceeded || s == shared.StepSkipped }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
