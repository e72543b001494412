package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/agent/membership"
	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/ctxtime"
	"github.com/rivetmetal/rivet/shared"
)

// Machine is one simulated machine: the agent's loop (register, check in, fetch the plan,
// run this mode's phase with the agent's real step runner, reboot into service mode), with
// its own HTTPS connection and, when the fleet gives it a gossip address, a real Serf
// member (the agent's membership package).
type Machine struct {
	Index int
	ID    shared.MachineID
	fleet *Fleet

	client     *shared.Client // machine token
	gossipInfo shared.GossipInfo
	member     *membership.Member
	nextGossip time.Time
	joined     bool // has joined the pool at least once
	mode       shared.AgentMode
	rebootDue  bool // set by the reboot executor, read after RunPhase (same goroutine)

	mu      sync.Mutex
	state   shared.State
	acked   map[string]shared.StepStatus // step → last result the API acknowledged
	readyAt time.Time
	failed  string // why the machine stopped, if it did
	gen     uint64 // plan generation last run
}

// State is the machine's state as the coordinator last told it.
func (m *Machine) State() shared.State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Acked returns the step results the API acknowledged, by step name.
func (m *Machine) Acked() map[string]shared.StepStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]shared.StepStatus, len(m.acked))
	for k, v := range m.acked {
		out[k] = v
	}
	return out
}

// Failed says why the machine gave up ("" while it has not).
func (m *Machine) Failed() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed
}

func (m *Machine) ip() string {
	ip, _ := m.fleet.cfg.Addr(m.Index)
	return ip
}

// run is the machine's life until ctx ends.
func (m *Machine) run(ctx context.Context) {
	if err := m.register(ctx); err != nil {
		return
	}
	defer m.stopGossip(true) // as the agent does when its service stops
	m.mode = shared.ModeRAM
	for ctx.Err() == nil {
		m.ensureGossip()
		ran, err := m.tick(ctx)
		if m.rebootDue {
			m.reboot(ctx)
			continue
		}
		var failure *step.Failure
		if errors.As(err, &failure) {
			m.setFailed(failure.Error())
		}
		if ran && err == nil {
			continue
		}
		m.wait(ctx)
	}
}

// register enrols the machine, retrying with backoff as the agent does.
func (m *Machine) register(ctx context.Context) error {
	cfg := m.fleet.cfg
	base, err := shared.NewClient(shared.ClientConfig{URLs: append([]string(nil), cfg.URLs...),
		CAFingerprint: cfg.CAFingerprint, Token: cfg.EnrolToken})
	if err != nil {
		m.setFailed(err.Error())
		return err
	}
	req := coordinatortest.RegisterRequest(cfg.FirstIndex + m.Index)
	req.Labels = map[string]string{"rack": rackName(m.Index, cfg.Racks)}
	req.Addr = m.ip()
	req.Attempt = fmt.Sprintf("fleetsim-%016x-%d", m.Index, time.Now().UnixNano())
	r := rand.New(rand.NewPCG(uint64(m.Index), 11))
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		start := time.Now()
		resp, err := base.Register(ctx, req)
		route := "register"
		if m.Index < cfg.BurstRoute {
			route = "register_burst"
		}
		m.fleet.stats.record(route, time.Since(start), err, true)
		if err == nil {
			m.ID, m.gossipInfo = resp.Machine.ID, resp.Gossip
			m.client = base.WithToken(resp.MachineToken)
			m.setState(resp.Machine.State)
			m.fleet.stats.milestone(MilestoneRegistered)
			return nil
		}
		if err := ctxtime.Sleep(ctx, time.Duration(float64(wait)*(0.7+0.6*r.Float64()))); err != nil {
			return err
		}
	}
}

func rackName(i, racks int) string {
	if racks <= 0 {
		racks = 1
	}
	return "r" + itoa(i%racks)
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// tick is one check-in, one plan fetch and, when steps of this mode's phase are due, a
// run of them. ran says whether steps ran.
func (m *Machine) tick(ctx context.Context) (ran bool, err error) {
	start := time.Now()
	rec, err := m.client.Checkin(ctx, m.ID, &shared.CheckinRequest{Mode: m.mode, Version: "sim", Addr: m.ip(),
		Generation: m.currentGen()})
	m.fleet.stats.record("checkin", time.Since(start), err, false)
	if err != nil {
		return false, err
	}
	m.setState(rec.State)
	start = time.Now()
	view, err := m.client.Plan(ctx, m.ID)
	m.fleet.stats.record("plan", time.Since(start), err, false)
	if err != nil {
		return false, err
	}
	m.setState(view.State)
	phase := shared.PhaseRAM
	if m.mode == shared.ModeService {
		phase = shared.PhaseDisk
	}
	// The agent's own rule, on the state as the agent keeps it (the check-in's, then the
	// plan's when it names one).
	if due, _ := shared.StepsDue(view, m.State(), phase); !due {
		return false, nil
	}
	m.setGen(view.Plan.Generation)
	execs := m.executors()
	for _, s := range view.Plan.Steps {
		if execs[s.Kind] == nil {
			// A step kind newer than this simulator (the plan grows): a short generic step.
			execs[s.Kind] = m.genericStep()
		}
	}
	runner := step.NewRunner(step.RunnerConfig{ID: m.ID, Reporter: reporter{m}, Executors: execs,
		StateDir: m.journalDir(), Logger: slog.New(slog.DiscardHandler)})
	return true, runner.RunPhase(ctx, view, phase)
}

// reboot leaves gossip on purpose (the coordinators record "left", not "failed"), is
// away for the reboot's duration, and comes back as the installed OS's service agent.
func (m *Machine) reboot(ctx context.Context) {
	m.rebootDue = false
	m.stopGossip(true)
	r := rand.New(rand.NewPCG(uint64(m.Index), 13))
	d := m.fleet.cfg.Durations
	if ctxtime.Sleep(ctx, d.draw(r, d.Reboot)) != nil {
		return
	}
	m.mode = shared.ModeService
	m.nextGossip = time.Time{}
	m.fleet.stats.milestone(MilestoneRebooted)
}

// wait sleeps for the poll interval (with jitter), a plan-changed nudge, or ctx.
func (m *Machine) wait(ctx context.Context) {
	interval := m.fleet.cfg.PollInterval
	d := time.Duration(float64(interval) * (0.8 + 0.4*rand.Float64()))
	t := time.NewTimer(d)
	defer t.Stop()
	var nudges <-chan struct{}
	if m.member != nil {
		nudges = m.member.Nudges()
	}
	select {
	case <-ctx.Done():
	case <-nudges:
	case <-t.C:
	}
}

// ensureGossip starts and joins the machine's Serf member when it has a gossip address,
// and joins again when no coordinator is alive in its view (they all restarted).
func (m *Machine) ensureGossip() {
	ip, bind := m.fleet.cfg.Addr(m.Index)
	if bind == "" || time.Now().Before(m.nextGossip) {
		return
	}
	if m.member != nil && m.member.CoordinatorsAlive() > 0 {
		return
	}
	m.nextGossip = time.Now().Add(5 * time.Second)
	if m.member == nil {
		mem, err := membership.Start(membership.Config{ID: m.ID, BindAddr: bind,
			AdvertiseAddr: ip, Key: m.gossipInfo.Key, Tags: m.tags(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			m.fleet.stats.record("gossip_start", 0, err, false)
			return
		}
		m.member = mem
	}
	start := time.Now()
	_, err := m.member.Join(m.gossipInfo.Addrs)
	m.fleet.stats.record("gossip_join", time.Since(start), err, false)
	if err == nil && !m.joined {
		m.joined = true
		m.fleet.gossipJoined()
	}
}

func (m *Machine) stopGossip(leave bool) {
	if m.member == nil {
		return
	}
	if leave {
		_ = m.member.Leave()
	}
	_ = m.member.Shutdown()
	m.member = nil
}

func (m *Machine) tags() shared.Tags {
	m.mu.Lock()
	defer m.mu.Unlock()
	return shared.Tags{Kind: shared.KindAgent, MachineID: m.ID, State: m.state, Version: "sim"}
}

func (m *Machine) setState(st shared.State) {
	if st == "" {
		return
	}
	m.mu.Lock()
	changed := m.state != st
	m.state = st
	first := st == shared.StateReady && m.readyAt.IsZero()
	if first {
		m.readyAt = time.Now()
	}
	m.mu.Unlock()
	if first {
		m.fleet.stats.milestone(MilestoneReady)
	}
	if changed && m.member != nil {
		_ = m.member.SetTags(m.tags())
	}
}

func (m *Machine) setFailed(why string) {
	m.mu.Lock()
	m.failed = why
	m.mu.Unlock()
}

func (m *Machine) currentGen() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen
}

func (m *Machine) setGen(g uint64) {
	m.mu.Lock()
	m.gen = g
	m.mu.Unlock()
}

// reporter times every step report and remembers the results the API acknowledged.
type reporter struct{ m *Machine }

func (r reporter) Report(ctx context.Context, id shared.MachineID, rep *shared.StepReport) error {
	start := time.Now()
	err := r.m.client.Report(ctx, id, rep)
	route := "report"
	if rep.Status == shared.StepRunning && rep.Progress != nil {
		route = "progress"
	}
	r.m.fleet.stats.record(route, time.Since(start), err, true)
	if err == nil && rep.Status != shared.StepRunning {
		r.m.mu.Lock()
		if r.m.acked == nil {
			r.m.acked = map[string]shared.StepStatus{}
		}
		r.m.acked[rep.Step] = rep.Status
		r.m.mu.Unlock()
	}
	return err
}

// journalDir is where this machine's agent keeps its step journal in the current mode:
// the RAM agent's tmpfs and the installed OS's disk are different places.
func (m *Machine) journalDir() string {
	if m.fleet.cfg.JournalDir == "" {
		return ""
	}
	return filepath.Join(m.fleet.cfg.JournalDir, itoa(m.Index)+"-"+string(m.mode))
}
