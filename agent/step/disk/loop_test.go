package disk

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/disk/disktest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// loops attaches n loop devices of size bytes, gives them serials RVT-<suffix>-<i> in a
// fake sysfs, and returns them with a Resolver that sees them.
func loops(t *testing.T, n int, size int64) ([]*disktest.Loop, []string, Resolver) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "losetup")
	suffix := disktest.Suffix()
	ids := map[string]disktest.Identity{}
	var ls []*disktest.Loop
	var serials []string
	for i := 0; i < n; i++ {
		l, err := disktest.Attach(t.TempDir(), size)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := l.Detach(); err != nil {
				t.Error(err)
			}
		})
		serial := "RVT-" + suffix + "-" + string(rune('A'+i))
		ids[l.Name] = disktest.Identity{Serial: serial}
		ls = append(ls, l)
		serials = append(serials, serial)
	}
	sys := t.TempDir()
	if err := disktest.FakeSysfs(sys, ids); err != nil {
		t.Fatal(err)
	}
	return ls, serials, Resolver{SysRoot: sys}
}

// sum hashes path; tests pass a loop device's backing file, which holds the same bytes
// as the device and reads far faster.
func sum(t *testing.T, path string) string {
	t.Helper()
	s, err := disktest.SHA256(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestWipeOnLoopDevices(t *testing.T) {
	ls, serials, r := loops(t, 2, 128<<20)
	testenv.RequireCommand(t, "mkfs.ext4")
	blkid := testenv.RequireCommand(t, "blkid")
	target, other := ls[0], ls[1]

	// The target has a GPT with one partition at 32 MiB holding ext4: a signature that
	// only the old partition table points at. A canary lies outside every wiped range.
	f, err := os.OpenFile(target.Dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	head := make(memDisk, 128<<20)
	if err := WriteEmptyGPT(head, int64(len(head)), 512); err != nil {
		t.Fatal(err)
	}
	addGPTPartition(t, head, 512, 1, 0, 32<<20/512, 96<<20/512-1)
	canary := bytes.Repeat([]byte("rivet canary "), 1000)
	copy(head[100<<20:], canary)
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", "-E", "offset=33554432", target.Dev, "65536")
	if out := run(t, blkid, "-p", "-O", "33554432", "-o", "export", target.Dev); !strings.Contains(out, "TYPE=ext4") {
		t.Fatalf("test setup: no ext4 in the partition:\n%s", out)
	}
	otherBefore := sum(t, other.File)

	// The real sysfs names a loop device by its backing file, as the inventory does.
	if d, err := (Resolver{}).Resolve(shared.DiskTarget{Serial: "loop:" + target.File}); err != nil || d.Name != target.Name {
		t.Fatalf("resolving loop:%s in the real sysfs: %v, %v", target.File, d, err)
	}

	var last shared.Progress
	exec := &Executor{Resolver: r}
	status, err := exec.Run(context.Background(), shared.Step{Name: "wipe", Kind: shared.StepDisk, Phase: shared.PhaseRAM,
		Disk: &shared.DiskStep{Target: shared.DiskTarget{Serial: serials[0]}, GPT: true}},
		func(p shared.Progress) { last = p })
	if err != nil || status != shared.StepSucceeded {
		t.Fatalf("wipe: %v %v", status, err)
	}
	if last.Total == 0 || last.Done != last.Total {
		t.Fatalf("last progress %+v: want done == total", last)
	}
	if out, err := exec2(blkid, "-p", "-O", "33554432", "-o", "export", target.Dev); err == nil && strings.Contains(out, "ext4") {
		t.Fatalf("ext4 in the old partition survived the wipe:\n%s", out)
	}
	if out := run(t, blkid, "-p", "-o", "export", target.Dev); !strings.Contains(out, "PTTYPE=gpt") {
		t.Fatalf("no fresh GPT after the wipe:\n%s", out)
	}
	got := make([]byte, len(canary))
	f, err = os.Open(target.Dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 100<<20); err != nil || !bytes.Equal(got, canary) {
		t.Fatalf("the wipe wrote outside its plan (canary at 100 MiB changed): %v", err)
	}
	if sum(t, other.File) != otherBefore {
		t.Fatal("the other disk changed")
	}

	// With discard, the whole disk forgets its contents (loop devices punch holes).
	exec.Discard = true
	if _, err := exec.Run(context.Background(), shared.Step{Name: "wipe", Kind: shared.StepDisk, Phase: shared.PhaseRAM,
		Disk: &shared.DiskStep{Target: shared.DiskTarget{Serial: serials[0]}}}, func(shared.Progress) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(got, 100<<20); err != nil || !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatalf("discard left data behind: %v", err)
	}
	if sum(t, other.File) != otherBefore {
		t.Fatal("the other disk changed")
	}
}

func exec2(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func TestRefusesMountedDisk(t *testing.T) {
	ls, serials, r := loops(t, 1, 64<<20)
	testenv.RequireCommand(t, "mkfs.ext4")
	testenv.RequireCommand(t, "mount")
	run(t, "mkfs.ext4", "-q", "-F", ls[0].Dev)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-o", "ro,noload", ls[0].Dev, mnt) // read-only: mount and umount write nothing
	t.Cleanup(func() { _, _ = exec2("umount", mnt) })
	before := sum(t, ls[0].File)

	d, err := r.Resolve(shared.DiskTarget{Serial: serials[0]})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CheckUnused(d); err == nil || !strings.Contains(err.Error(), "mounted at "+mnt) {
		t.Fatalf("a mounted disk passed the guard: %v", err)
	}
	if f, err := OpenExclusive(d, 0); err == nil || !step.IsPermanent(err) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("the kernel's exclusive open did not refuse a mounted disk: %v", err)
	}
	_, err = (&Executor{Resolver: r}).Run(context.Background(), shared.Step{Name: "wipe", Kind: shared.StepDisk,
		Phase: shared.PhaseRAM, Disk: &shared.DiskStep{Target: shared.DiskTarget{Serial: serials[0]}, GPT: true}},
		func(shared.Progress) {})
	if err == nil || !step.IsPermanent(err) || step.HintOf(err) == "" {
		t.Fatalf("want a permanent refusal with a hint, got %v", err)
	}
	run(t, "umount", mnt)
	if sum(t, ls[0].File) != before {
		t.Fatal("the mounted disk was written to")
	}
}
