package image_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/disk"
	"github.com/rivetmetal/rivet/agent/step/disk/disktest"
	"github.com/rivetmetal/rivet/agent/step/image"
	"github.com/rivetmetal/rivet/agent/step/image/imagetest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

const testID = shared.MachineID("m-00000000000000a1")

// childEnv carries a childConfig to a re-executed test binary that runs the image step
// and gets SIGKILLed by its parent.
const childEnv = "RIVET_IMAGE_STEP_CHILD"

type childConfig struct {
	SysRoot     string
	URL         string
	Fingerprint string
	Plan        shared.PlanView
	StateDir    string
}

var (
	fixtureDir  string
	fixtureOnce sync.Once
	bigImage    *imagetest.Image
	smallImage  *imagetest.Image
	fixtureErr  error
)

func TestMain(m *testing.M) {
	if raw := os.Getenv(childEnv); raw != "" {
		os.Exit(runChild(raw))
	}
	code := m.Run()
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

// images builds, once per test binary, a 1 GiB and an 8 MiB image with zstd, gzip and raw
// forms in one directory that the image servers serve.
func images(t *testing.T) string {
	t.Helper()
	fixtureOnce.Do(func() {
		if fixtureDir, fixtureErr = os.MkdirTemp("", "rvt-images-"); fixtureErr != nil {
			return
		}
		if bigImage, fixtureErr = imagetest.Build(fixtureDir, "big", 1<<30, 1); fixtureErr != nil {
			return
		}
		if fixtureErr = bigImage.Zstd(filepath.Join(fixtureDir, "big.raw.zst")); fixtureErr != nil {
			return
		}
		if smallImage, fixtureErr = imagetest.Build(fixtureDir, "small", 8<<20, 2); fixtureErr != nil {
			return
		}
		if fixtureErr = smallImage.Zstd(filepath.Join(fixtureDir, "small.raw.zst")); fixtureErr != nil {
			return
		}
		fixtureErr = smallImage.Gzip(filepath.Join(fixtureDir, "small.raw.gz"))
	})
	if fixtureErr != nil {
		t.Fatalf("building test images: %v", fixtureErr)
	}
	return fixtureDir
}

// rig is two loop devices with made-up serials, an image server and a pinned client.
type rig struct {
	target, other       *disktest.Loop
	serial, otherSerial string
	sysRoot             string
	srv                 *imagetest.Server
	client              *shared.Client
	resolver            disk.Resolver
	otherSumBefore      string
	targetSumBefore     string
}

func newRig(t *testing.T, diskSize int64) *rig {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "losetup")
	dir := images(t)
	r := &rig{}
	suffix := disktest.Suffix()
	ids := map[string]disktest.Identity{}
	for i, l := range []**disktest.Loop{&r.target, &r.other} {
		lp, err := disktest.Attach(t.TempDir(), diskSize)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := lp.Detach(); err != nil {
				t.Error(err)
			}
		})
		*l = lp
		ids[lp.Name] = disktest.Identity{Serial: fmt.Sprintf("RVT-%s-%d", suffix, i)}
		scribble(t, lp.Dev, diskSize) // non-zero data at both ends, so any write shows
	}
	r.serial, r.otherSerial = ids[r.target.Name].Serial, ids[r.other.Name].Serial
	r.sysRoot = t.TempDir()
	if err := disktest.FakeSysfs(r.sysRoot, ids); err != nil {
		t.Fatal(err)
	}
	r.resolver = disk.Resolver{SysRoot: r.sysRoot}
	var err error
	if r.srv, err = imagetest.Serve(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.srv.Close() })
	if r.client, err = r.srv.Client(); err != nil {
		t.Fatal(err)
	}
	r.otherSumBefore = sum(t, r.other.File, -1)
	r.targetSumBefore = sum(t, r.target.File, -1)
	return r
}

func scribble(t *testing.T, dev string, size int64) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	noise := make([]byte, 16<<20)
	_, _ = rand.Read(noise)
	for _, off := range []int64{0, size - int64(len(noise))} {
		if _, err := f.WriteAt(noise, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// sum hashes the first n bytes (all when n < 0) of path. Tests hash a loop device's
// backing file rather than /dev/loopN: it holds the same bytes (the loop driver writes
// through to it), and reads through the loop device crawl at ~100 MB/s on a small VM.
func sum(t *testing.T, path string, n int64) string {
	t.Helper()
	s, err := disktest.SHA256(path, n)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func plan(gen uint64, serial string, img *imagetest.Image, url string) *shared.PlanView {
	target := shared.DiskTarget{Serial: serial, Name: "test disk"}
	return &shared.PlanView{State: shared.StateProvisioning, Plan: &shared.Plan{
		MachineID: testID, Role: "test", Generation: gen,
		Steps: []shared.Step{
			{Name: "wipe", Kind: shared.StepDisk, Phase: shared.PhaseRAM, Disk: &shared.DiskStep{Target: target, GPT: true}},
			{Name: "image", Kind: shared.StepImage, Phase: shared.PhaseRAM, Image: &shared.ImageStep{Target: target,
				Image: shared.ImageSpec{URL: url, SHA256: img.SHA256, Compression: shared.CompressionAuto}}},
		},
	}}
}

// reports is a stand-in coordinator that records reports and can act on progress.
type reports struct {
	mu         sync.Mutex
	all        []shared.StepReport
	onProgress func(shared.Progress)
}

func (r *reports) Report(_ context.Context, _ shared.MachineID, rep *shared.StepReport) error {
	r.mu.Lock()
	r.all = append(r.all, *rep)
	hook := r.onProgress
	r.mu.Unlock()
	if hook != nil && rep.Progress != nil && rep.Status == shared.StepRunning {
		hook(*rep.Progress)
	}
	return nil
}

// final returns the last non-progress report of step name.
func (r *reports) final(name string) shared.StepReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last shared.StepReport
	for _, rep := range r.all {
		if rep.Step == name {
			last = rep
		}
	}
	return last
}

func runner(resolver disk.Resolver, src image.Opener, rep step.Reporter, stateDir string) *step.Runner {
	return step.NewRunner(step.RunnerConfig{
		ID: testID, Reporter: rep, StateDir: stateDir, ProgressEvery: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Executors: map[shared.StepKind]step.Executor{
			shared.StepDisk:  &disk.Executor{Resolver: resolver},
			shared.StepImage: &image.Executor{Resolver: resolver, Source: src},
		},
		Retry: step.RetryPolicy{MaxAttempts: 2, Initial: 10 * time.Millisecond},
	})
}

func (r *rig) checkTargetHolds(t *testing.T, img *imagetest.Image) {
	t.Helper()
	if got := sum(t, r.target.File, img.Size); got != img.SHA256 {
		t.Fatalf("target's first %d bytes hash to %s, want the image's %s", img.Size, got, img.SHA256)
	}
	if sum(t, r.other.File, -1) != r.otherSumBefore {
		t.Fatal("the other disk changed")
	}
}

func TestDiskAndImageStepsOnLoopDevices(t *testing.T) {
	r := newRig(t, 2<<30)
	rep := &reports{}
	start := time.Now()
	err := runner(r.resolver, r.client, rep, t.TempDir()).RunPhase(context.Background(),
		plan(1, r.serial, bigImage, "/v1/images/big.raw.zst"), shared.PhaseRAM)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("disk + image (1 GiB, zstd over HTTPS) took %v", time.Since(start).Round(time.Millisecond))
	r.checkTargetHolds(t, bigImage)
	if f := rep.final("image"); f.Status != shared.StepSucceeded || f.Progress == nil || f.Progress.Done != 1<<30 {
		t.Fatalf("final image report %+v", f)
	}
	sawTotal := false
	for _, p := range rep.all {
		if p.Step == "image" && p.Progress != nil && p.Progress.Total == 1<<30 && p.Progress.Done < 1<<30 {
			sawTotal = true
		}
	}
	if !sawTotal {
		t.Error("no progress report carried the image size (zstd frame content size)")
	}

	// Another agent run with no journal and a coordinator that recorded nothing: the disk
	// step is not in this plan, and the image step finds its marker and skips.
	view := plan(2, r.serial, bigImage, "/v1/images/big.raw.zst")
	view.Plan.Steps = view.Plan.Steps[1:]
	rep2 := &reports{}
	if err := runner(r.resolver, r.client, rep2, t.TempDir()).RunPhase(context.Background(), view, shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	if f := rep2.final("image"); f.Status != shared.StepSkipped {
		t.Fatalf("image step on a disk that holds the image: %+v, want skipped", f)
	}
	r.checkTargetHolds(t, bigImage)
}

func TestImageStepCancelledMidWriteThenRerun(t *testing.T) {
	r := newRig(t, 2<<30)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rep := &reports{onProgress: func(p shared.Progress) {
		if p.Done >= 256<<20 {
			cancel()
		}
	}}
	stateDir := t.TempDir()
	view := plan(1, r.serial, bigImage, "/v1/images/big.raw.zst")
	err := runner(r.resolver, r.client, rep, stateDir).RunPhase(ctx, view, shared.PhaseRAM)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want the cancellation, got %v", err)
	}
	if f := rep.final("image"); f.Status != shared.StepRunning {
		t.Fatalf("image step after cancellation: %+v, want still running", f)
	}
	rep2 := &reports{}
	if err := runner(r.resolver, r.client, rep2, stateDir).RunPhase(context.Background(), view, shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	// The interrupted write left no marker: the rerun writes (attempt 2), it does not skip.
	if f := rep2.final("image"); f.Status != shared.StepSucceeded || f.Attempt != 2 {
		t.Fatalf("rerun: %+v, want succeeded on attempt 2", f)
	}
	if f := rep2.final("wipe"); f.Status != shared.StepSucceeded || f.Attempt != 1 {
		t.Fatalf("wipe after rerun: %+v, want the journal's result re-reported (attempt 1)", f)
	}
	r.checkTargetHolds(t, bigImage)
}

func TestImageStepSurvivesSIGKILL(t *testing.T) {
	r := newRig(t, 2<<30)
	stateDir := t.TempDir()
	view := plan(1, r.serial, bigImage, "/v1/images/big.raw.zst")
	cfg, _ := json.Marshal(childConfig{SysRoot: r.sysRoot, URL: r.srv.URL, Fingerprint: r.srv.Fingerprint,
		Plan: *view, StateDir: stateDir})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var rep shared.StepReport
		if json.Unmarshal(sc.Bytes(), &rep) == nil && rep.Step == "image" && rep.Progress != nil && rep.Progress.Done >= 256<<20 {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL: no cleanup, no deferred flush
				t.Fatal(err)
			}
			killed = true
			break
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatal("the child finished or failed before it could be killed mid-write")
	}
	rep := &reports{}
	if err := runner(r.resolver, r.client, rep, stateDir).RunPhase(context.Background(), view, shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	if f := rep.final("image"); f.Status != shared.StepSucceeded || f.Attempt != 2 {
		t.Fatalf("after SIGKILL: %+v, want succeeded on attempt 2", f)
	}
	r.checkTargetHolds(t, bigImage)
}

// runChild runs the plan in a child process, printing every report as a JSON line.
func runChild(raw string) int {
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	client, err := shared.NewClient(shared.ClientConfig{URLs: []string{cfg.URL}, CAFingerprint: cfg.Fingerprint})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rep := &stdoutReporter{enc: json.NewEncoder(os.Stdout)}
	err = runner(disk.Resolver{SysRoot: cfg.SysRoot}, client, rep, cfg.StateDir).RunPhase(context.Background(), &cfg.Plan, shared.PhaseRAM)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type stdoutReporter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (s *stdoutReporter) Report(_ context.Context, _ shared.MachineID, rep *shared.StepReport) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enc.Encode(rep)
}

func TestPlanNamingAMissingDiskWritesNothing(t *testing.T) {
	r := newRig(t, 2<<30)
	rep := &reports{}
	view := plan(1, "RVT-NO-SUCH-DISK", bigImage, "/v1/images/big.raw.zst")
	err := runner(r.resolver, r.client, rep, t.TempDir()).RunPhase(context.Background(), view, shared.PhaseRAM)
	var f *step.Failure
	if !errors.As(err, &f) || f.Step != "wipe" {
		t.Fatalf("want the wipe step to fail, got %v", err)
	}
	final := rep.final("wipe")
	if final.Status != shared.StepFailed || !strings.Contains(final.Error, `no disk matches serial "RVT-NO-SUCH-DISK"`) ||
		!strings.Contains(final.Error, r.target.Name) || final.Hint == "" || final.Attempt != 1 {
		t.Fatalf("failed report: %+v", final)
	}
	if got := rep.final("image"); got.Step != "" {
		t.Fatalf("the image step ran after the disk step failed: %+v", got)
	}
	if sum(t, r.target.File, -1) != r.targetSumBefore || sum(t, r.other.File, -1) != r.otherSumBefore {
		t.Fatal("a disk changed although the plan named neither")
	}
}

func TestSmallImagesEveryCompressionAndFailures(t *testing.T) {
	r := newRig(t, 64<<20)
	ctx := context.Background()
	for _, url := range []string{"/v1/images/small.raw.zst", "/v1/images/small.raw.gz", "/v1/images/small.raw"} {
		if _, err := os.Stat(filepath.Join(fixtureDir, filepath.Base(url))); err != nil {
			t.Fatal(err)
		}
		rep := &reports{}
		view := plan(1, r.serial, smallImage, url)
		if url == "/v1/images/small.raw.zst" {
			r.srv.DropAfter.Store(1 << 20) // the connection breaks once: resumed with Range
		}
		if err := runner(r.resolver, r.client, rep, t.TempDir()).RunPhase(ctx, view, shared.PhaseRAM); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if f := rep.final("image"); f.Status != shared.StepSucceeded || f.Attempt != 1 {
			t.Fatalf("%s: %+v, want succeeded at the first attempt", url, f)
		}
		r.checkTargetHolds(t, smallImage)
	}

	// A wrong digest fails for good, and the disk neither boots the bad image nor claims it.
	rep := &reports{}
	view := plan(1, r.serial, smallImage, "/v1/images/small.raw.zst")
	view.Plan.Steps[1].Image.Image.SHA256 = strings.Repeat("0", 64)
	err := runner(r.resolver, r.client, rep, t.TempDir()).RunPhase(ctx, view, shared.PhaseRAM)
	var f *step.Failure
	if !errors.As(err, &f) || f.Step != "image" {
		t.Fatalf("want the image step to fail, got %v", err)
	}
	if final := rep.final("image"); final.Attempt != 1 || !strings.Contains(final.Error, "sha256") || !strings.Contains(final.Hint, "sha256") {
		t.Fatalf("digest failure report: %+v", final)
	}
	if sum(t, r.target.File, 1<<20) != sum(t, "/dev/zero", 1<<20) {
		t.Fatal("the head of a disk with a bad image was not zeroed")
	}
	// With the right digest again, the step writes (no marker survived the failure).
	rep = &reports{}
	view = plan(1, r.serial, smallImage, "/v1/images/small.raw.zst")
	view.Plan.Steps = view.Plan.Steps[1:]
	if err := runner(r.resolver, r.client, rep, t.TempDir()).RunPhase(ctx, view, shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	if final := rep.final("image"); final.Status != shared.StepSucceeded {
		t.Fatalf("after a digest failure: %+v, want written again", final)
	}

	// A missing image is a permanent failure with a hint, after one attempt.
	rep = &reports{}
	view = plan(1, r.serial, smallImage, "/v1/images/missing.raw.zst")
	err = runner(r.resolver, r.client, rep, t.TempDir()).RunPhase(ctx, view, shared.PhaseRAM)
	if !errors.As(err, &f) || rep.final("image").Attempt != 1 || !strings.Contains(rep.final("image").Hint, "image directory") {
		t.Fatalf("missing image: %v, %+v", err, rep.final("image"))
	}
}
