package handoff

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/disk"
	"github.com/rivetmetal/rivet/agent/step/disk/disktest"
	"github.com/rivetmetal/rivet/agent/step/image/imagetest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// loopWithImage attaches a loop disk holding an image with an ext4 root labelled label
// (no root when label is ""), and returns it with a resolver that knows its serial.
func loopWithImage(t *testing.T, label string) (*disktest.Loop, disk.Resolver, shared.DiskTarget) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "losetup")
	testenv.RequireCommand(t, "mkfs.ext4")
	img, err := imagetest.Build(t.TempDir(), "os", 80<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	if label != "" {
		if err := img.AddRootFS(label); err != nil {
			t.Fatal(err)
		}
	}
	l, err := disktest.Attach(t.TempDir(), 128<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Detach(); err != nil {
			t.Error(err)
		}
	})
	copyInto(t, img.Raw, l.Dev)
	serial := "RVT-HANDOFF-" + disktest.Suffix()
	sys := t.TempDir()
	if err := disktest.FakeSysfs(sys, map[string]disktest.Identity{l.Name: {Serial: serial}}); err != nil {
		t.Fatal(err)
	}
	return l, disk.Resolver{SysRoot: sys}, shared.DiskTarget{Serial: serial}
}

func copyInto(t *testing.T, src, dev string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Sync(); err != nil {
		t.Fatal(err)
	}
}

func handoffStep(target shared.DiskTarget, label string) shared.Step {
	return shared.Step{Name: "handoff", Kind: shared.StepHandoff, Phase: shared.PhaseRAM,
		Handoff: &shared.HandoffStep{Target: target, RootLabel: label, Hostname: "m-00000000000000aa"}}
}

var files = []File{
	{Path: "/etc/rivet/agent.yaml", Mode: 0o644, Data: []byte("servers: [https://10.0.0.1:7443]\n")},
	{Path: "/var/lib/rivet/machine.json", Mode: 0o600, Data: []byte(`{"machine_id":"m-1","machine_token":"rvm_x"}`)},
}

func executor(r disk.Resolver, t *testing.T) *Executor {
	return &Executor{Resolver: r, MountDir: filepath.Join(t.TempDir(), "mnt"),
		Files: func() ([]File, error) { return files, nil }}
}

// TestWritesIntoTheLabelledRoot runs the step twice (a rerun after a crash) against a
// real loop disk and then mounts the root to read back what the installed agent will.
func TestWritesIntoTheLabelledRoot(t *testing.T) {
	l, resolver, target := loopWithImage(t, "rivet-root")
	e := executor(resolver, t)
	for attempt := 1; attempt <= 2; attempt++ {
		st, err := e.Run(context.Background(), handoffStep(target, "rivet-root"), func(shared.Progress) {})
		if err != nil || st != shared.StepSucceeded {
			t.Fatalf("attempt %d: status %q, err %v", attempt, st, err)
		}
	}
	if mounted(t, e.MountDir) {
		t.Fatalf("%s is still mounted after the step", e.MountDir)
	}
	root := mountReadOnly(t, l.Dev+"p1")
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(root, f.Path))
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Fatalf("%s = %q, %v; want %q", f.Path, got, err, f.Data)
		}
		fi, _ := os.Stat(filepath.Join(root, f.Path))
		if fi.Mode().Perm() != f.Mode {
			t.Errorf("%s mode %v, want %v", f.Path, fi.Mode().Perm(), f.Mode)
		}
	}
	if got, err := os.ReadFile(filepath.Join(root, "etc/hostname")); err != nil || string(got) != "m-00000000000000aa\n" {
		t.Errorf("/etc/hostname = %q, %v; want the plan's host name", got, err)
	}
	if fi, _ := os.Stat(filepath.Join(root, "var/lib/rivet")); fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700 (it holds the machine token)", fi.Mode().Perm())
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "etc/rivet/.*tmp*"))
	if len(leftovers) > 0 {
		t.Errorf("temp files left behind: %v", leftovers)
	}
}

// TestRefusesAnImageWithoutTheLabel: a wrong label is a permanent failure that names
// the fix, and nothing is written anywhere.
func TestRefusesAnImageWithoutTheLabel(t *testing.T) {
	l, resolver, target := loopWithImage(t, "other-root")
	e := executor(resolver, t)
	_, err := e.Run(context.Background(), handoffStep(target, "rivet-root"), func(shared.Progress) {})
	if err == nil || !step.IsPermanent(err) || !strings.Contains(err.Error(), "image.root_label") ||
		!strings.Contains(err.Error(), "other-root") {
		t.Fatalf("err = %v; want a permanent error naming the label seen and image.root_label", err)
	}
	root := mountReadOnly(t, l.Dev+"p1")
	if _, err := os.Stat(filepath.Join(root, "etc/rivet")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("etc/rivet exists on a refused disk: %v", err)
	}
}

// TestRefusesADiskWithoutPartitions: a blank disk (the image step never ran) is refused.
func TestRefusesADiskWithoutPartitions(t *testing.T) {
	_, resolver, target := loopWithImage(t, "")
	_, err := executor(resolver, t).Run(context.Background(), handoffStep(target, "rivet-root"), func(shared.Progress) {})
	if err == nil || !strings.Contains(err.Error(), "no ext4 file system labelled") {
		t.Fatalf("err = %v; want no labelled file system", err)
	}
}

func mountReadOnly(t *testing.T, dev string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(dev, dir, "ext4", unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Error(err)
		}
	})
	return dir
}

func mounted(t *testing.T, dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(data), " "+dir+" ")
}
