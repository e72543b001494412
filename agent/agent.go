// Package agent is the rivet-agent's main loop, the same in RAM mode (PID 1 in the
// initramfs, before install) and in service mode (under systemd on the installed OS):
//
//	inventory → register (enrolment token; retried) → keep the machine token
//	→ join the gossip pool → loop { check in, fetch the plan, run this mode's phase,
//	  publish state and step as gossip tags, wait for a nudge or the poll interval }
//
// Secrets (the enrolment and machine tokens, the gossip key) are never logged.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rivetmetal/rivet/agent/config"
	"github.com/rivetmetal/rivet/agent/membership"
	"github.com/rivetmetal/rivet/shared"
)

// PhaseRunner runs the steps of one phase of a plan, reporting each; *step.Runner is one.
type PhaseRunner interface {
	RunPhase(ctx context.Context, view *shared.PlanView, phase shared.Phase) error
}

// Reporter sends a step report; the agent hands the runner one that also updates the
// gossip tags and the step metrics. It has the shape of step.Reporter.
type Reporter interface {
	Report(ctx context.Context, id shared.MachineID, r *shared.StepReport) error
}

// Deps are the agent's parts that main wires (and tests replace).
type Deps struct {
	// Inventory collects the machine's inventory (inventory.Collect with its options).
	Inventory func(ctx context.Context) *shared.Inventory
	// NewRunner builds the step runner once the machine id is known. client carries the
	// machine token (executors use it for images, boot config and the swarm); reporter
	// must receive every step report.
	NewRunner func(id shared.MachineID, client *shared.Client, reporter Reporter) PhaseRunner
	// NewSwarmOps builds what runs day-two swarm operations once the machine id is
	// known; nil (or a nil answer) where there is no dockerd to run them, as in RAM mode.
	NewSwarmOps func(id shared.MachineID, client *shared.Client) SwarmOpRunner
	// BootAgent boots the Rivet RAM agent from the installed OS (kexec, else a reboot
	// through the firmware), for a machine re-provisioned with a new image; it returns
	// only on failure. nil where the agent cannot (RAM mode, tests).
	BootAgent func(ctx context.Context, id shared.MachineID, client *shared.Client) error
	// Logger; nil discards.
	Logger *slog.Logger
	// Registry receives the agent's metrics; nil makes a private one.
	Registry *prometheus.Registry
	// Progress prints numbered console lines in RAM mode (boot.Env.Progress); may be nil.
	Progress func(step int, format string, args ...any)
}

// Console progress steps after boot.Prepare's three.
const (
	progressRegistered = 4
	progressGossip     = 5
	progressPlan       = 6
)

// Agent is one machine's agent.
type Agent struct {
	cfg     config.Config
	deps    Deps
	log     *slog.Logger
	metrics *metrics
	phase   shared.Phase

	mu       sync.Mutex
	id       shared.MachineID
	client   *shared.Client // carries the machine token
	token    string         // the machine token, for the handoff to the installed OS
	gossip   shared.GossipInfo
	state    shared.State
	admitted bool // the coordinator's last word: may this machine have the cluster's secrets
	step     string
	starts   map[string]time.Time // step name → when its current attempt started

	member     *membership.Member
	nextGossip time.Time // when to try starting or rejoining gossip again
	gossipWait time.Duration
	lastNote   string // last "why nothing runs" message, logged on change only
	gen        uint64 // plan generation last seen
}

// New returns an agent for a validated configuration.
func New(cfg config.Config, deps Deps) *Agent {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	phase := shared.PhaseDisk
	if cfg.Mode == shared.ModeRAM {
		phase = shared.PhaseRAM
	}
	return &Agent{cfg: cfg, deps: deps, log: log, phase: phase,
		metrics: newMetrics(deps.Registry, cfg.Mode), starts: map[string]time.Time{}}
}

// Run registers the machine and then serves its plan until ctx ends. It returns an error
// only for what retrying cannot fix (no token at all, bad wiring); network trouble and
// refusals are logged with what to fix and retried.
func (a *Agent) Run(ctx context.Context) error {
	if a.deps.Inventory == nil || a.deps.NewRunner == nil {
		return errors.New("agent: Deps.Inventory and Deps.NewRunner are required")
	}
	a.log.Info("rivet-agent starting", "version", shared.Version, "config", a.cfg)
	if a.cfg.MetricsAddr != config.MetricsOff {
		_, stop := a.serveMetrics(a.cfg.MetricsAddr)
		defer stop()
	}
	inv := a.deps.Inventory(ctx)
	if inv == nil {
		return errors.New("agent: inventory collection returned nothing")
	}
	for section, msg := range inv.Errors {
		a.log.Warn("inventory section incomplete", "section", section, "err", msg)
	}
	if err := a.enrol(ctx, inv); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer a.stopGossip()
	return a.serve(ctx)
}

// serve is the steady loop: check in, fetch the plan, run what is due, wait.
func (a *Agent) serve(ctx context.Context) error {
	runner, ops := a.newRunner(), a.newSwarmOps()
	trigger := "start"
	for {
		a.ensureGossip(ctx)
		ran, err := a.tick(ctx, runner, ops, trigger)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errReenrolled) {
			runner, ops = a.newRunner(), a.newSwarmOps() // new token: executors must use it
			trigger = "reenrol"
			continue
		}
		if err != nil {
			a.log.Warn("poll failed; trying again later", "err", err)
		}
		if ran && err == nil {
			trigger = "work" // steps ran: look again at once, the next may be due
			continue
		}
		trigger = a.wait(ctx)
		if trigger == "" {
			return nil
		}
	}
}

func (a *Agent) newRunner() PhaseRunner {
	id, client := a.identity()
	return a.deps.NewRunner(id, client, reporter{a})
}

func (a *Agent) newSwarmOps() SwarmOpRunner {
	if a.deps.NewSwarmOps == nil {
		return nil
	}
	id, client := a.identity()
	return a.deps.NewSwarmOps(id, client)
}

var errReenrolled = errors.New("re-enrolled")

// tick does one check-in and plan poll, and runs the phase's due steps, or, on a ready
// machine, the swarm operations it is to run. ran says whether anything was run.
func (a *Agent) tick(ctx context.Context, runner PhaseRunner, ops SwarmOpRunner, trigger string) (ran bool, err error) {
	id, client := a.identity()
	a.metrics.polls.WithLabelValues(trigger).Inc()
	m, err := client.Checkin(ctx, id, &shared.CheckinRequest{
		Mode: a.cfg.Mode, Version: shared.Version, Addr: a.advertiseIP(), Generation: a.generation(),
	})
	if err != nil {
		a.metrics.checkins.WithLabelValues("error").Inc()
		return false, a.handleAuthError(ctx, "check-in", err)
	}
	a.metrics.checkins.WithLabelValues("ok").Inc()
	a.setState(m.State)
	a.mu.Lock()
	a.admitted = m.Admitted
	a.mu.Unlock()
	view, err := client.Plan(ctx, id)
	if err != nil {
		return false, a.handleAuthError(ctx, "plan", err)
	}
	if view.State != "" {
		a.setState(view.State)
	}
	due, note := a.due(view, m)
	if !due {
		a.noteOnce(note)
		if a.reimaged(view, m) {
			return true, a.bootAgent(ctx)
		}
		if ops != nil && a.currentState() == shared.StateReady {
			return a.runSwarmOps(ctx, ops)
		}
		return false, nil
	}
	a.noteOnce("")
	a.progress(progressPlan, "plan %s generation %d: running %s steps", view.Plan.Role, view.Plan.Generation, a.phase)
	a.rememberGeneration(view.Plan.Generation)
	if err := runner.RunPhase(ctx, view, a.phase); err != nil {
		return true, fmt.Errorf("running %s steps: %w", a.phase, err)
	}
	return true, nil
}

// reimaged reports whether this installed OS is to be replaced and boots the RAM agent
// itself: the machine is being re-provisioned and planned again with an image to write
// (which the RAM agent does), and no BMC cycle was asked for.
func (a *Agent) reimaged(view *shared.PlanView, m *shared.MachineSummary) bool {
	return a.cfg.Mode == shared.ModeService && m.Reprovision == shared.ReprovisionReinstall && m.ReprovisionVia != shared.ViaBMC &&
		a.currentState() == shared.StatePlanned && shared.RAMStepsPending(view)
}

// bootAgent hands the machine to the RAM agent for its new image.
func (a *Agent) bootAgent(ctx context.Context) error {
	if a.deps.BootAgent == nil {
		a.noteOnce("re-imaging: this agent cannot boot the Rivet agent; power-cycle the machine with PXE once (rivet machines power cycle --pxe-once)")
		return nil
	}
	id, client := a.identity()
	a.log.Info("re-imaging: booting the Rivet agent for the new image")
	if err := a.deps.BootAgent(ctx, id, client); err != nil {
		return fmt.Errorf("booting the Rivet agent for the new image: %w", err)
	}
	return nil
}

// due decides whether this mode's phase has steps to run now, and if not, why: the
// shared rule (shared.StepsDue), told the coordinator's reason when no role matches.
func (a *Agent) due(view *shared.PlanView, m *shared.MachineSummary) (bool, string) {
	if view.Plan == nil && m.Unmatched != "" {
		// The coordinator's reason says itself what is wrong ("no role matches: ...",
		// "ambiguous: ..."): a prefix of ours would repeat it.
		return false, "not planned: " + m.Unmatched
	}
	if view.Plan != nil {
		a.rememberGeneration(view.Plan.Generation)
	}
	return shared.StepsDue(view, a.currentState(), a.phase)
}

// noteOnce logs why nothing runs, only when the reason changes.
func (a *Agent) noteOnce(note string) {
	a.mu.Lock()
	changed := note != a.lastNote
	a.lastNote = note
	a.mu.Unlock()
	if changed && note != "" {
		a.log.Info(note)
		a.progress(progressPlan, "%s", note)
	}
}

// handleAuthError re-enrols when the coordinator no longer knows the token or the
// machine (a revoked token, a rebuilt cluster); otherwise it passes err on.
func (a *Agent) handleAuthError(ctx context.Context, op string, err error) error {
	switch shared.StatusOf(err) {
	case 401, 403, 404:
		a.log.Warn(op+" refused; registering again", "err", err)
		if rerr := a.reenrol(ctx); rerr != nil {
			return rerr
		}
		return errReenrolled
	}
	return fmt.Errorf("%s: %w", op, err)
}

// wait sleeps until a nudge, the poll interval (with jitter) or the end of ctx, and
// returns what woke it ("" for ctx).
func (a *Agent) wait(ctx context.Context) string {
	a.updateMemberGauge()
	timer := time.NewTimer(jitter(a.cfg.PollInterval.Std(), 0.2))
	defer timer.Stop()
	var nudges <-chan struct{}
	var stopped <-chan struct{}
	if m := a.currentMember(); m != nil {
		nudges, stopped = m.Nudges(), m.Stopped()
	}
	select {
	case <-ctx.Done():
		return ""
	case <-nudges:
		a.log.Debug("nudged: plan changed")
		return "nudge"
	case <-stopped:
		a.gossipStopped()
		return "gossip"
	case <-timer.C:
		return "interval"
	}
}

func (a *Agent) identity() (shared.MachineID, *shared.Client) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.id, a.client
}

func (a *Agent) setState(st shared.State) {
	a.mu.Lock()
	changed := a.state != st
	a.state = st
	a.mu.Unlock()
	if changed {
		a.log.Info("machine state", "state", st)
		a.publishTags()
	}
}

func (a *Agent) currentState() shared.State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

func (a *Agent) progress(step int, format string, args ...any) {
	if a.deps.Progress != nil {
		a.deps.Progress(step, format, args...)
	}
}

// reporter passes step reports to the coordinator and watches them go by: the step
// name becomes a gossip tag, and finished attempts feed the step duration histogram.
type reporter struct{ a *Agent }

func (r reporter) Report(ctx context.Context, id shared.MachineID, rep *shared.StepReport) error {
	r.a.observeReport(rep)
	_, client := r.a.identity()
	return client.Report(ctx, id, rep)
}

func (a *Agent) observeReport(rep *shared.StepReport) {
	a.mu.Lock()
	var took time.Duration
	finished := false
	switch rep.Status {
	case shared.StepRunning:
		if _, ok := a.starts[rep.Step]; !ok {
			a.starts[rep.Step] = time.Now()
		}
	default:
		if start, ok := a.starts[rep.Step]; ok {
			took, finished = time.Since(start), true
			delete(a.starts, rep.Step)
		}
	}
	changed := a.step != rep.Step
	a.step = rep.Step
	a.mu.Unlock()
	if finished {
		a.metrics.stepSeconds.WithLabelValues(rep.Step, string(rep.Status)).Observe(took.Seconds())
	}
	if changed {
		a.publishTags()
	}
}
