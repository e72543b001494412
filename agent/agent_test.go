package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"

	"github.com/hashicorp/serf/serf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rivetmetal/rivet/agent/config"
	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

func testInventory() *shared.Inventory {
	return &shared.Inventory{
		System: shared.System{Vendor: "Rivet", Product: "Test", UUID: "4c4c4544-0042-3510-8048-b4c04f564433"},
		NICs:   []shared.NIC{{Name: "eth0", MAC: "52:54:00:12:34:56", PCIAddress: "0000:00:03.0", Link: true}},
	}
}

func testConfig(fc *fakeCoordinator, mode shared.AgentMode, stateDir string) config.Config {
	return config.Config{
		Mode: mode, Servers: []string{fc.srv.URL}, CAFingerprint: fc.fingerprint(),
		EnrolToken: fc.enrolToken, StateDir: stateDir, Labels: map[string]string{"rack": "r1"},
		GossipBind: "127.0.0.1:0", MetricsAddr: config.MetricsOff,
		PollInterval: config.Duration(time.Hour), // only start, work and nudges make it poll
		LogFormat:    "json", LogLevel: "debug",
	}
}

// executions records which steps the executors ran, in order.
type executions struct {
	mu    sync.Mutex
	steps []string
}

func (e *executions) executor() step.Executor {
	return step.ExecutorFunc(func(_ context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error) {
		progress(shared.Progress{Done: 1, Total: 2})
		e.mu.Lock()
		e.steps = append(e.steps, s.Name)
		e.mu.Unlock()
		return shared.StepSucceeded, nil
	})
}

func (e *executions) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.steps...)
}

// startAgent runs an agent with the real step runner and recording executors.
func startAgent(t *testing.T, cfg config.Config, logs *testenv.LogBuffer, reg *prometheus.Registry) (*executions, context.CancelFunc, <-chan error) {
	t.Helper()
	ex := &executions{}
	deps := Deps{
		Inventory: func(context.Context) *shared.Inventory { return testInventory() },
		NewRunner: func(id shared.MachineID, _ *shared.Client, rep Reporter) PhaseRunner {
			executors := map[shared.StepKind]step.Executor{}
			for _, k := range []shared.StepKind{shared.StepDisk, shared.StepBootCfg, shared.StepSwarm} {
				executors[k] = ex.executor()
			}
			return step.NewRunner(step.RunnerConfig{ID: id, Reporter: rep, Executors: executors,
				StateDir: cfg.StateDir, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
		},
		Logger:   slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: reg,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		done <- New(cfg, deps).Run(ctx)
		close(stopped)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop within 15s of cancel")
		}
	})
	return ex, cancel, done
}

func ramPlan(gen uint64, names ...string) *shared.Plan {
	p := &shared.Plan{Role: "worker", Generation: gen}
	for _, n := range names {
		p.Steps = append(p.Steps, shared.Step{Name: n, Kind: shared.StepDisk, Phase: shared.PhaseRAM,
			Disk: &shared.DiskStep{Target: shared.DiskTarget{Serial: "SER-1"}}})
	}
	p.Steps = append(p.Steps, shared.Step{Name: "swarm", Kind: shared.StepSwarm, Phase: shared.PhaseDisk,
		Swarm: &shared.SwarmStep{Role: shared.SwarmWorker}})
	return p
}

func TestAgentRegistersRunsItsPhaseAndAnswersNudges(t *testing.T) {
	fc := newFakeCoordinator(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	var logs testenv.LogBuffer
	reg := prometheus.NewRegistry()
	ex, cancel, done := startAgent(t, testConfig(fc, shared.ModeRAM, stateDir), &logs, reg)

	// Registered: the id is derived from the hardware, the token is kept 0600. The agent
	// writes its state file after the coordinator has answered, so wait for both.
	testenv.Eventually(t, 20*time.Second, "registration and the kept state file", testenv.Holds(func() bool {
		regs, _, _ := fc.snapshot()
		_, err := os.Stat(filepath.Join(stateDir, stateFile))
		return regs == 1 && err == nil
	}, nil))
	id := fc.id
	info, err := os.Stat(filepath.Join(stateDir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", info.Mode().Perm())
	}
	kept, err := loadState(stateDir)
	if err != nil || kept.MachineID != id || kept.MachineToken != fc.machineToken {
		t.Errorf("kept state %+v, %v; want id %s and the machine token", kept, err, id)
	}

	// Joined gossip with tags that parse.
	testenv.Eventually(t, 20*time.Second, "the agent in the coordinator's gossip pool", testenv.Holds(func() bool {
		m, ok := fc.member(string(id))
		return ok && m.Status == serf.StatusAlive
	}, nil))

	// A plan arrives: the nudge makes the agent poll at once (its interval is an hour)
	// and run the RAM-phase steps in order, never the disk-phase one.
	fc.setPlan(ramPlan(1, "wipe", "partition"))
	nudge(t, fc, id)
	testenv.Eventually(t, 20*time.Second, "RAM steps to run", testenv.Holds(func() bool { return len(ex.list()) == 2 }, nil))
	if got := strings.Join(ex.list(), ","); got != "wipe,partition" {
		t.Errorf("ran %s, want wipe,partition", got)
	}
	testenv.Eventually(t, 20*time.Second, "step tags in gossip", testenv.Holds(func() bool {
		m, ok := fc.member(string(id))
		if !ok {
			return false
		}
		tags, err := shared.ParseTags(m.Tags)
		return err == nil && tags.MachineID == id && tags.Step == "partition" && tags.State == shared.StateProvisioning
	}, nil))

	// A re-plan with one more step: again only a nudge can make it run now.
	fc.setPlan(ramPlan(2, "wipe", "partition", "mkfs"))
	fc.mu.Lock()
	fc.steps = map[string]shared.StepState{
		"wipe":      {Name: "wipe", Status: shared.StepSucceeded},
		"partition": {Name: "partition", Status: shared.StepSucceeded},
	}
	fc.mu.Unlock()
	nudge(t, fc, id)
	testenv.Eventually(t, 20*time.Second, "the new step to run", testenv.Holds(func() bool { return len(ex.list()) == 3 }, nil))
	if last := ex.list()[2]; last != "mkfs" {
		t.Errorf("third step run %q, want mkfs", last)
	}
	results := func() string {
		_, _, reports := fc.snapshot()
		var out []string
		for _, r := range reports {
			if r.Status != shared.StepRunning {
				out = append(out, r.Step+"="+string(r.Status))
			}
		}
		return strings.Join(out, ",")
	}
	testenv.Eventually(t, 20*time.Second, "three result reports", testenv.Holds(func() bool { return strings.Count(results(), "=") == 3 }, nil))
	if got := results(); got != "wipe=succeeded,partition=succeeded,mkfs=succeeded" {
		t.Errorf("result reports %s", got)
	}
	fc.mu.Lock()
	lastCheckin := fc.checkins[len(fc.checkins)-1]
	fc.mu.Unlock()
	if lastCheckin.Mode != shared.ModeRAM || lastCheckin.Addr != "127.0.0.1" {
		t.Errorf("check-in %+v, want mode ram from 127.0.0.1", lastCheckin)
	}

	if v := counterValue(t, reg, "rivet_agent_plan_polls_total", "trigger", "nudge"); v < 2 {
		t.Errorf("nudge-triggered polls = %v, want at least 2", v)
	}
	if v := counterValue(t, reg, "rivet_agent_step_duration_seconds", "status", "succeeded"); v != 3 {
		t.Errorf("step duration samples = %v, want 3", v)
	}

	// Stopping leaves the pool gracefully.
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v after cancel, want nil", err)
	}
	testenv.Eventually(t, 45*time.Second, "the agent to have left", testenv.Holds(func() bool {
		m, ok := fc.member(string(id))
		return ok && m.Status == serf.StatusLeft
	}, nil))

	for name, s := range map[string]string{"enrolment token": fc.enrolToken, "machine token": fc.machineToken, "gossip key": fc.key} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the %s appears in the logs", name)
		}
	}
	// Serf logs through the agent's gossip logger: each key once (subsystem=gossip
	// subsystem=serf was twice one key).
	if !strings.Contains(logs.String(), `"lib":"serf"`) {
		t.Errorf("no Serf log line:\n%s", logs.String())
	}
	for _, bad := range testenv.RepeatedKeys(logs.String()) {
		t.Errorf("repeated key in %s", bad)
	}
}

// nudge sends the plan-changed query to the agent and waits for its acknowledgement.
func nudge(t *testing.T, fc *fakeCoordinator, id shared.MachineID) {
	t.Helper()
	_, before, _ := fc.snapshot()
	resp, err := fc.serf.Query("rivet-plan-changed", nil, &serf.QueryParam{FilterNodes: []string{string(id)}, RequestAck: true})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case from := <-resp.AckCh():
		if from != string(id) {
			t.Fatalf("ack from %q, want %s", from, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ack for the nudge")
	}
	testenv.Eventually(t, 10*time.Second, "a plan poll after the nudge", testenv.Holds(func() bool { _, polls, _ := fc.snapshot(); return polls > before }, nil))
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := false
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.Counter != nil:
				total += m.GetCounter().GetValue()
			case m.Histogram != nil:
				total += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return total
}

func TestAgentResumesWithKeptTokenAfterRestart(t *testing.T) {
	fc := newFakeCoordinator(t)
	stateDir := t.TempDir()
	var logs testenv.LogBuffer
	_, cancel, done := startAgent(t, testConfig(fc, shared.ModeService, stateDir), &logs, nil)
	testenv.Eventually(t, 20*time.Second, "registration", testenv.Holds(func() bool { regs, _, _ := fc.snapshot(); return regs == 1 }, nil))
	testenv.Eventually(t, 20*time.Second, "a check-in", testenv.Holds(func() bool { fc.mu.Lock(); defer fc.mu.Unlock(); return len(fc.checkins) > 0 }, nil))
	cancel()
	<-done

	// Restart without an enrolment token: the kept machine token must do.
	cfg := testConfig(fc, shared.ModeService, stateDir)
	cfg.EnrolToken = ""
	fc.mu.Lock()
	before := len(fc.checkins)
	fc.mu.Unlock()
	startAgent(t, cfg, &logs, nil)
	testenv.Eventually(t, 20*time.Second, "a check-in after restart", testenv.Holds(func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return len(fc.checkins) > before
	}, nil))
	fc.mu.Lock()
	by := append([]string(nil), fc.registeredBy...)
	fc.mu.Unlock()
	if len(by) != 2 || by[0] != "enrol" || by[1] != "machine" {
		t.Errorf("registrations were made with %v; want [enrol machine]: the restart must prove itself with the kept token", by)
	}
	fc.mu.Lock()
	last := fc.checkins[len(fc.checkins)-1]
	fc.mu.Unlock()
	if last.Mode != shared.ModeService {
		t.Errorf("check-in mode %q, want service (first disk boot)", last.Mode)
	}
}

func TestAgentRetriesRefusedRegistrationAndSaysWhatToFix(t *testing.T) {
	fc := newFakeCoordinator(t)
	fc.rejectEnrol = 2
	var logs testenv.LogBuffer
	reg := prometheus.NewRegistry()
	startAgent(t, testConfig(fc, shared.ModeRAM, t.TempDir()), &logs, reg)
	testenv.Eventually(t, 30*time.Second, "registration after two refusals", testenv.Holds(func() bool { regs, _, _ := fc.snapshot(); return regs == 1 }, nil))
	if !strings.Contains(logs.String(), "rivet tokens create --role enrol") {
		t.Errorf("the 401 was not explained:\n%s", logs.String())
	}
	if v := counterValue(t, reg, "rivet_agent_registrations_total", "result", "error"); v != 2 {
		t.Errorf("failed registrations counted %v, want 2", v)
	}
	if v := counterValue(t, reg, "rivet_agent_registrations_total", "result", "ok"); v != 1 {
		t.Errorf("successful registrations counted %v, want 1", v)
	}
}

func TestAgentExplainsAPinMismatch(t *testing.T) {
	fc := newFakeCoordinator(t)
	cfg := testConfig(fc, shared.ModeRAM, t.TempDir())
	cfg.CAFingerprint = "sha256:" + strings.Repeat("ab", 32)
	var logs testenv.LogBuffer
	startAgent(t, cfg, &logs, nil)
	testenv.Eventually(t, 20*time.Second, "the pin mismatch to be explained", testenv.Holds(func() bool {
		return strings.Contains(logs.String(), "not the one pinned by --ca-fingerprint")
	}, nil))
	if regs, _, _ := fc.snapshot(); regs != 0 {
		t.Errorf("registered with a coordinator whose CA does not match the pin")
	}
}

func TestAgentWithoutCredentialsStopsWithAHint(t *testing.T) {
	fc := newFakeCoordinator(t)
	cfg := testConfig(fc, shared.ModeService, t.TempDir())
	cfg.EnrolToken = ""
	var logs testenv.LogBuffer
	_, _, done := startAgent(t, cfg, &logs, nil)
	select {
	case err := <-done:
		if !errors.Is(err, errNoCredentials) {
			t.Errorf("Run = %v, want errNoCredentials", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going without any token")
	}
}

func TestAgentReregistersWhenTheMachineTokenIsRefused(t *testing.T) {
	fc := newFakeCoordinator(t)
	var logs testenv.LogBuffer
	cfg := testConfig(fc, shared.ModeService, t.TempDir())
	cfg.PollInterval = config.Duration(time.Second)
	startAgent(t, cfg, &logs, nil)
	testenv.Eventually(t, 20*time.Second, "registration", testenv.Holds(func() bool { regs, _, _ := fc.snapshot(); return regs == 1 }, nil))
	fc.mu.Lock()
	fc.machineToken = "revoked-" + fc.machineToken // the coordinator forgot the token
	fc.mu.Unlock()
	testenv.Eventually(t, 30*time.Second, "a second registration", testenv.Holds(func() bool { regs, _, _ := fc.snapshot(); return regs == 2 }, nil))
	testenv.Eventually(t, 10*time.Second, "the new machine token to be kept", testenv.Holds(func() bool {
		kept, err := loadState(cfg.StateDir)
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return err == nil && kept != nil && kept.MachineToken == fc.machineToken
	}, nil))
}
