package step

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

const testID = shared.MachineID("m-0123456789abcdef")

// recorder is a Reporter that keeps every report and can be told to fail.
type recorder struct {
	mu      sync.Mutex
	reports []shared.StepReport
	failN   int   // fail this many calls first
	failErr error // with this error

	progressed     chan struct{} // when not nil, closed at the first progress report
	progressedOnce sync.Once
}

func (r *recorder) Report(_ context.Context, id shared.MachineID, rep *shared.StepReport) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id != testID {
		return fmt.Errorf("wrong id %s", id)
	}
	if r.failN > 0 {
		r.failN--
		return r.failErr
	}
	r.reports = append(r.reports, *rep)
	if rep.Status == shared.StepRunning && rep.Progress != nil && r.progressed != nil {
		r.progressedOnce.Do(func() { close(r.progressed) })
	}
	return nil
}

// trail is "step:status[#attempt]" for every non-progress report.
func (r *recorder) trail() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rep := range r.reports {
		if rep.Status == shared.StepRunning && rep.Progress != nil {
			continue
		}
		out = append(out, fmt.Sprintf("%s:%s#%d", rep.Step, rep.Status, rep.Attempt))
	}
	return out
}

func (r *recorder) last() shared.StepReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reports[len(r.reports)-1]
}

// counting is an executor that counts its runs and answers from a script.
type counting struct {
	mu   sync.Mutex
	runs map[string]int
	do   func(ctx context.Context, s shared.Step, n int, progress func(shared.Progress)) (shared.StepStatus, error)
}

func (c *counting) Run(ctx context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error) {
	c.mu.Lock()
	if c.runs == nil {
		c.runs = map[string]int{}
	}
	c.runs[s.Name]++
	n := c.runs[s.Name]
	c.mu.Unlock()
	if c.do == nil {
		return shared.StepSucceeded, nil
	}
	return c.do(ctx, s, n, progress)
}

func (c *counting) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[name]
}

func testPlan(gen uint64) *shared.PlanView {
	target := shared.DiskTarget{Serial: "S1"}
	return &shared.PlanView{State: shared.StateProvisioning, Plan: &shared.Plan{
		MachineID: testID, Role: "r", Generation: gen,
		Steps: []shared.Step{
			{Name: "wipe", Kind: shared.StepDisk, Phase: shared.PhaseRAM, Disk: &shared.DiskStep{Target: target}},
			{Name: "image", Kind: shared.StepImage, Phase: shared.PhaseRAM, Image: &shared.ImageStep{Target: target,
				Image: shared.ImageSpec{URL: "/v1/images/x.raw", SHA256: strings.Repeat("a", 64)}}},
			{Name: "boot", Kind: shared.StepBootCfg, Phase: shared.PhaseRAM, BootCfg: &shared.BootCfgStep{Boot: shared.BootDisk}},
			{Name: "join", Kind: shared.StepSwarm, Phase: shared.PhaseDisk, Swarm: &shared.SwarmStep{Role: shared.SwarmWorker}},
		},
	}}
}

func newTestRunner(t *testing.T, rep Reporter, exec Executor, dir string) *Runner {
	t.Helper()
	return NewRunner(RunnerConfig{
		ID: testID, Reporter: rep, StateDir: dir,
		Executors: map[shared.StepKind]Executor{shared.StepDisk: exec, shared.StepImage: exec,
			shared.StepBootCfg: exec, shared.StepSwarm: exec},
		Retry:         RetryPolicy{MaxAttempts: 3, Initial: time.Millisecond, Max: 5 * time.Millisecond},
		ProgressEvery: time.Hour,
	})
}

func equal(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("reports:\n got %v\nwant %v", got, want)
	}
}

func TestRunPhaseRunsOnlyItsPhaseInOrder(t *testing.T) {
	rec, exec := &recorder{}, &counting{}
	view := testPlan(1)
	view.Steps = []shared.StepState{{Name: "wipe", Status: shared.StepSucceeded, Attempt: 1}}
	if err := newTestRunner(t, rec, exec, t.TempDir()).RunPhase(context.Background(), view, shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	equal(t, rec.trail(), []string{"image:running#1", "image:succeeded#1", "boot:running#1", "boot:succeeded#1"})
	if exec.count("wipe") != 0 || exec.count("join") != 0 {
		t.Fatalf("ran a step the coordinator had done or of another phase: %v", exec.runs)
	}
}

func TestRunPhaseResumesFromJournal(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exec := &counting{do: func(ctx context.Context, s shared.Step, n int, _ func(shared.Progress)) (shared.StepStatus, error) {
		if s.Name == "image" && n == 1 {
			cancel() // the agent is killed in the middle of the image
			<-ctx.Done()
			return "", ctx.Err()
		}
		return shared.StepSucceeded, nil
	}}
	rec := &recorder{}
	err := newTestRunner(t, rec, exec, dir).RunPhase(ctx, testPlan(7), shared.PhaseRAM)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want the cancellation back, got %v", err)
	}
	equal(t, rec.trail(), []string{"wipe:running#1", "wipe:succeeded#1", "image:running#1"})

	// A new agent process: the coordinator lost every report (it shows nothing done).
	rec2 := &recorder{}
	if err := newTestRunner(t, rec2, exec, dir).RunPhase(context.Background(), testPlan(7), shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	if exec.count("wipe") != 1 {
		t.Fatalf("wipe ran %d times, want once: the journal should have skipped it", exec.count("wipe"))
	}
	equal(t, rec2.trail(), []string{"wipe:succeeded#1", "image:running#2", "image:succeeded#2", "boot:running#1", "boot:succeeded#1"})

	// A new plan generation forgets the journal: everything runs again.
	rec3 := &recorder{}
	if err := newTestRunner(t, rec3, exec, dir).RunPhase(context.Background(), testPlan(8), shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	if exec.count("wipe") != 2 {
		t.Fatalf("wipe ran %d times after a re-plan, want 2", exec.count("wipe"))
	}
}

func TestRunPhaseRetriesTransientErrors(t *testing.T) {
	exec := &counting{do: func(_ context.Context, s shared.Step, n int, _ func(shared.Progress)) (shared.StepStatus, error) {
		if s.Name == "image" && n < 3 {
			return "", errors.New("connection reset by peer")
		}
		return shared.StepSucceeded, nil
	}}
	rec := &recorder{}
	if err := newTestRunner(t, rec, exec, t.TempDir()).RunPhase(context.Background(), testPlan(1), shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	equal(t, rec.trail(), []string{"wipe:running#1", "wipe:succeeded#1", "image:running#1", "image:running#2",
		"image:running#3", "image:succeeded#3", "boot:running#1", "boot:succeeded#1"})
}

func TestRunPhaseStopsAtPermanentFailure(t *testing.T) {
	exec := &counting{do: func(_ context.Context, s shared.Step, _ int, _ func(shared.Progress)) (shared.StepStatus, error) {
		if s.Name == "wipe" {
			return "", WithHint(Permanent(errors.New("no disk with serial S1")), "check the role's install_disk")
		}
		return shared.StepSucceeded, nil
	}}
	rec := &recorder{}
	err := newTestRunner(t, rec, exec, t.TempDir()).RunPhase(context.Background(), testPlan(1), shared.PhaseRAM)
	var f *Failure
	if !errors.As(err, &f) || f.Step != "wipe" {
		t.Fatalf("want a *Failure for wipe, got %v", err)
	}
	equal(t, rec.trail(), []string{"wipe:running#1", "wipe:failed#1"})
	last := rec.last()
	if last.Error != "no disk with serial S1" || last.Hint != "check the role's install_disk" {
		t.Fatalf("failed report: error %q hint %q", last.Error, last.Hint)
	}
	if exec.count("wipe") != 1 || exec.count("image") != 0 {
		t.Fatalf("a permanent error was retried or later steps ran: %v", exec.runs)
	}
}

func TestRunPhaseGivesUpAfterMaxAttempts(t *testing.T) {
	exec := &counting{do: func(context.Context, shared.Step, int, func(shared.Progress)) (shared.StepStatus, error) {
		return "", errors.New("image server answered 502")
	}}
	rec := &recorder{}
	err := newTestRunner(t, rec, exec, t.TempDir()).RunPhase(context.Background(), testPlan(1), shared.PhaseRAM)
	var f *Failure
	if !errors.As(err, &f) || exec.count("wipe") != 3 {
		t.Fatalf("want a failure after 3 attempts, got %v after %d", err, exec.count("wipe"))
	}
	if last := rec.last(); last.Status != shared.StepFailed || last.Attempt != 3 || last.Hint == "" {
		t.Fatalf("last report %+v: want failed, attempt 3, with a hint", last)
	}
}

func TestReportsRetryWhileCoordinatorIsDown(t *testing.T) {
	rec := &recorder{failN: 3, failErr: &shared.APIError{Status: http.StatusServiceUnavailable, Code: shared.CodeNoLeader, Message: "no leader"}}
	if err := newTestRunner(t, rec, &counting{}, "").RunPhase(context.Background(), testPlan(1), shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	if got := len(rec.trail()); got != 6 {
		t.Fatalf("want all 6 reports delivered after the outage, got %d", got)
	}
}

func TestReportRefusalStopsThePhase(t *testing.T) {
	rec := &recorder{failN: 1, failErr: &shared.APIError{Status: http.StatusConflict, Code: shared.CodeConflict, Message: "plan generation 1 is stale"}}
	exec := &counting{}
	err := newTestRunner(t, rec, exec, "").RunPhase(context.Background(), testPlan(1), shared.PhaseRAM)
	if err == nil || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("want the refusal back, got %v", err)
	}
	if exec.count("wipe") != 0 {
		t.Fatal("ran a step the coordinator refused to hear about")
	}
}

// The first progress of a step is reported at once, with a rate; what follows within the
// interval (an hour here) is not, however much there is.
func TestProgressIsThrottledAndRated(t *testing.T) {
	rec := &recorder{progressed: make(chan struct{})}
	exec := &counting{do: func(_ context.Context, _ shared.Step, _ int, progress func(shared.Progress)) (shared.StepStatus, error) {
		progress(shared.Progress{Done: 1 << 20, Total: 1000 << 20})
		// Hold the step until the first report is in, so that ending the step cannot
		// overtake it: the test then knows exactly what that report must say.
		select {
		case <-rec.progressed:
		case <-time.After(10 * time.Second):
			return "", errors.New("the first progress was never reported")
		}
		for i := int64(2); i <= 1000; i++ {
			progress(shared.Progress{Done: i << 20, Total: 1000 << 20})
		}
		return shared.StepSucceeded, nil
	}}
	r := newTestRunner(t, rec, exec, "")
	view := testPlan(1)
	view.Plan.Steps = view.Plan.Steps[:1]
	if err := r.RunPhase(context.Background(), view, shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	var progressReports []shared.Progress
	for _, rep := range rec.reports {
		if rep.Status == shared.StepRunning && rep.Progress != nil {
			progressReports = append(progressReports, *rep.Progress)
		}
	}
	if len(progressReports) != 1 {
		t.Fatalf("progress reports %+v: want exactly one within one interval", progressReports)
	}
	if got := progressReports[0]; got.Done != 1<<20 || got.Total != 1000<<20 || got.BytesPerSec <= 0 {
		t.Fatalf("progress report %+v: want the first 1 MiB of 1000 MiB, with a rate", got)
	}
	final := rec.last()
	if final.Status != shared.StepSucceeded || final.Progress == nil || final.Progress.Done != 1000<<20 {
		t.Fatalf("final report %+v: want succeeded with the last progress", final)
	}
}

func TestMissingExecutorFailsClearly(t *testing.T) {
	rec := &recorder{}
	r := NewRunner(RunnerConfig{ID: testID, Reporter: rec, Executors: map[shared.StepKind]Executor{}})
	err := r.RunPhase(context.Background(), testPlan(1), shared.PhaseRAM)
	if err == nil || !strings.Contains(err.Error(), `no executor for step kind "disk"`) {
		t.Fatalf("got %v", err)
	}
	if rec.last().Status != shared.StepFailed {
		t.Fatalf("missing executor not reported failed: %+v", rec.last())
	}
}

func TestRunPhaseRefusesAnotherMachinesPlan(t *testing.T) {
	view := testPlan(1)
	view.Plan.MachineID = "m-ffffffffffffffff"
	exec := &counting{}
	if err := newTestRunner(t, &recorder{}, exec, "").RunPhase(context.Background(), view, shared.PhaseRAM); err == nil {
		t.Fatal("ran another machine's plan")
	}
	if exec.count("wipe") != 0 {
		t.Fatal("executed a step of another machine's plan")
	}
}

func TestJournalSurvivesCorruptionAndIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, journalFile)
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err := openJournal(dir, testID, 3)
	if err != nil {
		t.Fatal(err)
	}
	s := testPlan(3).Plan.Steps[0]
	if _, ok := j.lookup(s); ok {
		t.Fatal("a corrupt journal produced an entry")
	}
	if err := j.record(s, shared.StepSucceeded, 2); err != nil {
		t.Fatal(err)
	}
	j2, err := openJournal(dir, testID, 3)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := j2.lookup(s); !ok || e.Status != shared.StepSucceeded || e.Attempt != 2 {
		t.Fatalf("entry after reload: %+v %v", e, ok)
	}
	changed := s
	changed.Disk = &shared.DiskStep{Target: shared.DiskTarget{Serial: "OTHER"}}
	if _, ok := j2.lookup(changed); ok {
		t.Fatal("an entry counted for a step with different content")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestBackoffGrowsAndIsBounded(t *testing.T) {
	p := RetryPolicy{Initial: time.Second, Max: 8 * time.Second, Jitter: 0.25}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 30: 8 * time.Second} {
		got := p.Backoff(attempt)
		if got > want || got < want*3/4 {
			t.Errorf("backoff(%d) = %v, want in [%v, %v]", attempt, got, want*3/4, want)
		}
	}
}
