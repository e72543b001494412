package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/bootcfg"
	"github.com/rivetmetal/rivet/agent/step/disk"
	"github.com/rivetmetal/rivet/agent/step/disk/disktest"
	"github.com/rivetmetal/rivet/agent/step/handoff"
	"github.com/rivetmetal/rivet/agent/step/image"
	"github.com/rivetmetal/rivet/agent/step/image/imagetest"
	"github.com/rivetmetal/rivet/agent/step/reboot"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestCoordinatorPlansAndServesAnImageOntoALoopDisk is issue 4's disk proof end to end:
// the coordinator plans a machine whose inventory lists two loop-backed disks, choosing
// the install disk by serial; serves a 1 GiB zstd image from its image directory; and
// records every report. The agent's runner writes it, is interrupted mid-write, and on
// the rerun the target hashes to the image's sha256 while the other disk is unchanged.
func TestCoordinatorPlansAndServesAnImageOntoALoopDisk(t *testing.T) {
	testenvLong(t)
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "losetup")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	imageDir := filepath.Join(dir, "images")
	if err := os.MkdirAll(imageDir, 0o700); err != nil {
		t.Fatal(err)
	}
	img, err := imagetest.Build(dir, "os", 1<<30, 7)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.AddRootFS(shared.DefaultRootLabel); err != nil {
		t.Fatal(err)
	}
	if err := img.Zstd(filepath.Join(imageDir, "os.raw.zst")); err != nil {
		t.Fatal(err)
	}

	// Two loop disks with serials that only the test's fake sysfs knows.
	suffix := disktest.Suffix()
	ids := map[string]disktest.Identity{}
	var loops []*disktest.Loop
	for i := range 2 {
		l, err := disktest.Attach(t.TempDir(), 2<<30)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := l.Detach(); err != nil {
				t.Error(err)
			}
		})
		loops = append(loops, l)
		ids[l.Name] = disktest.Identity{Serial: fmt.Sprintf("RVT-%s-%d", suffix, i)}
	}
	target, other := loops[0], loops[1]
	sysRoot := t.TempDir()
	if err := disktest.FakeSysfs(sysRoot, ids); err != nil {
		t.Fatal(err)
	}
	resolver := disk.Resolver{SysRoot: sysRoot}
	otherBefore, err := disktest.SHA256(other.File, -1)
	if err != nil {
		t.Fatal(err)
	}

	cluster := startCluster(ctx, t, coordinatortest.Options{Dir: filepath.Join(dir, "coord"),
		Nodes: 1, ExtraArgs: []string{"--image-dir", imageDir, "--plan-settle", "1s"}})
	admin := cluster.Client()
	role := fmt.Sprintf(`
name: loop-install
selector: {labels: {pool: loop}}
install_disk: {serial: %s}
image: {url: /v1/images/os.raw.zst, sha256: "%s", compression: zstd}
swarm: {role: none}
`, ids[target.Name].Serial, img.SHA256)
	applyRoles(ctx, t, admin, role)
	// The operator's label that the role selects on comes with the expected machine.
	if _, err := admin.ImportExpected(ctx, &shared.ImportRequest{Machines: []shared.ExpectedMachine{
		coordinatortest.Expected(4242, map[string]string{"pool": "loop"})}}); err != nil {
		t.Fatal(err)
	}
	req := coordinatortest.RegisterRequest(4242)
	req.Inventory.Disks = nil
	for _, l := range loops {
		req.Inventory.Disks = append(req.Inventory.Disks, shared.Disk{Name: l.Name, SizeBytes: 2 << 30, Type: "ssd", Serial: ids[l.Name].Serial})
	}
	reg, err := cluster.Client().WithToken(cluster.EnrolToken).Register(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	id := reg.Machine.ID
	machine := cluster.Client().WithToken(reg.MachineToken)
	var view *shared.PlanView
	testenv.Eventually(t, time.Minute, "the machine planned", func() error {
		v, err := machine.Plan(ctx, id)
		if err == nil && v.Plan == nil {
			err = fmt.Errorf("state %s, no plan yet", v.State)
		}
		view = v
		return err
	})

	state, _ := json.Marshal(map[string]string{"machine_id": string(id), "machine_token": reg.MachineToken})
	installedFiles := []handoff.File{{Path: "/var/lib/rivet/machine.json", Mode: 0o600, Data: state}}
	var rebooted atomic.Bool
	runner := func(rep step.Reporter, stateDir string) *step.Runner {
		return step.NewRunner(step.RunnerConfig{ID: id, Reporter: rep, StateDir: stateDir, ProgressEvery: 100 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Executors: map[shared.StepKind]step.Executor{
				shared.StepDisk:  &disk.Executor{Resolver: resolver},
				shared.StepImage: &image.Executor{Resolver: resolver, Source: machine},
				shared.StepHandoff: &handoff.Executor{Resolver: resolver, MountDir: filepath.Join(dir, "handoff"),
					Files: func() ([]handoff.File, error) { return installedFiles, nil }},
				shared.StepBootCfg: &bootcfg.Executor{ID: id, Booter: machine},
				shared.StepReboot:  &reboot.Executor{Delay: time.Millisecond, Reboot: func() error { rebooted.Store(true); return nil }},
			}})
	}
	stateDir := t.TempDir()

	// First run: interrupted once 300 MiB of the image are on the disk, as a crash would.
	runCtx, stop := context.WithCancel(ctx)
	interrupting := &interruptAt{Reporter: machine, step: "image", after: 300 << 20, stop: stop}
	if err := runner(interrupting, stateDir).RunPhase(runCtx, view, shared.PhaseRAM); err == nil {
		t.Fatal("the interrupted run reported success")
	}
	if !interrupting.fired.Load() {
		t.Fatal("the run ended before the interruption: the test proved nothing")
	}

	// Second run, same journal: it ends correct.
	view, err = machine.Plan(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := runner(machine, stateDir).RunPhase(ctx, view, shared.PhaseRAM); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("rivet-figure: image_integration size_mb=1024 rerun_s=%.1f\n", time.Since(start).Seconds())
	// The image is on the disk, byte for byte, except inside the root file system,
	// where the handoff step wrote the installed agent's files.
	if err := sameOutside(target.File, img.Raw, imagetest.RootFSStart, imagetest.RootFSSize, img.Size); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if out, err := exec.Command("mount", "-o", "ro", target.Dev+"p1", root).CombinedOutput(); err != nil {
		t.Fatalf("mounting the installed root: %v: %s", err, out)
	}
	defer exec.Command("umount", root).Run()
	if kept, err := os.ReadFile(filepath.Join(root, "var/lib/rivet/machine.json")); err != nil || !bytes.Equal(kept, state) {
		t.Fatalf("installed root holds machine.json %q (%v); want the machine's token handed off", kept, err)
	}
	if after, _ := disktest.SHA256(other.File, -1); after != otherBefore {
		t.Fatal("the disk the plan did not name was changed")
	}
	m, err := admin.Machine(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range m.Steps {
		if st.Status != shared.StepSucceeded && st.Status != shared.StepSkipped {
			t.Fatalf("coordinator records step %s as %s", st.Name, st.Status)
		}
	}
	if m.Boot != shared.BootDisk || !rebooted.Load() {
		t.Fatalf("boot %s, rebooted %v: want boot disk and a reboot", m.Boot, rebooted.Load())
	}
	evs, _ := admin.Events(ctx, id)
	attempts := 0
	for _, e := range evs {
		if e.Kind == shared.EventStep && len(e.Message) > 0 && e.Message[:min(len(e.Message), 18)] == "step image running" {
			attempts++
		}
	}
	if attempts < 2 {
		t.Fatalf("the timeline shows %d image attempts, want the interrupted one and the rerun", attempts)
	}
}

// sameOutside compares two files' first size bytes, except [skip, skip+skipLen).
func sameOutside(a, b string, skip, skipLen, size int64) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	for _, r := range [][2]int64{{0, skip}, {skip + skipLen, size}} {
		ha, hb := sha256.New(), sha256.New()
		if _, err := io.Copy(ha, io.NewSectionReader(fa, r[0], r[1]-r[0])); err != nil {
			return err
		}
		if _, err := io.Copy(hb, io.NewSectionReader(fb, r[0], r[1]-r[0])); err != nil {
			return err
		}
		if !bytes.Equal(ha.Sum(nil), hb.Sum(nil)) {
			return fmt.Errorf("disk and image differ in bytes [%d, %d)", r[0], r[1])
		}
	}
	return nil
}

// interruptAt passes reports on and cancels the run once a step has done enough bytes.
type interruptAt struct {
	step.Reporter
	step  string
	after int64
	stop  context.CancelFunc
	fired atomic.Bool
	once  sync.Once
}

func (r *interruptAt) Report(ctx context.Context, id shared.MachineID, rep *shared.StepReport) error {
	err := r.Reporter.Report(ctx, id, rep)
	if rep.Step == r.step && rep.Progress != nil && rep.Progress.Done >= r.after {
		r.once.Do(func() { r.fired.Store(true); r.stop() })
	}
	return err
}
