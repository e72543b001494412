// Package handoff runs handoff steps. Once the image is on the disk, the RAM agent
// writes into the installed root file system what the agent there needs to carry on as
// the same machine: its config file (coordinators, CA fingerprint, labels) and the
// machine token in its state directory; and the machine's host name, when the plan
// gives one. The installed agent then checks in with that
// token: no second registration, and no enrolment token is left on the disk.
//
// The root file system is found by its label (ext2/3/4 only, which is what Rivet mounts),
// never by partition number, so any partition layout works.
package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/disk"
	"github.com/rivetmetal/rivet/internal/atomicfile"
	"github.com/rivetmetal/rivet/shared"
)

// File is one file to write into the installed OS.
type File struct {
	Path string      // absolute path inside the installed OS
	Mode os.FileMode // permission bits; parent directories get 0755, or 0700 for 0600 files
	Data []byte
}

// Executor runs handoff steps.
type Executor struct {
	Resolver disk.Resolver
	// Files returns what to write; called when the step runs, so it carries the
	// machine token the agent holds at that moment.
	Files func() ([]File, error)
	// Prepare makes the kernel able to mount the root file system (in the initramfs it
	// loads the ext4 module); nil when nothing is needed.
	Prepare func() error
	// MountDir is where the root is mounted while writing; default /run/rivet-handoff.
	MountDir string
	Logger   *slog.Logger
}

// partitionWait bounds the wait for the kernel to create the partition device nodes
// after the partition table is read again.
const partitionWait = 10 * time.Second

// Run finds the labelled root file system on the step's disk and writes the files.
// Writing the same files again is harmless, so a rerun simply does it again.
func (e *Executor) Run(ctx context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error) {
	if s.Handoff == nil {
		return "", step.Permanent(fmt.Errorf("step %s has no handoff payload", s.Name))
	}
	log := step.LoggerOr(e.Logger)
	d, err := e.Resolver.ResolveUnused(s.Handoff.Target)
	if err != nil {
		return "", err
	}
	files, err := e.Files()
	if err != nil {
		return "", step.Permanent(fmt.Errorf("preparing the installed agent's files: %w", err))
	}
	if h := s.Handoff.Hostname; h != "" {
		files = append(files, File{Path: "/etc/hostname", Mode: 0o644, Data: []byte(h + "\n")})
	}
	part, err := e.findRoot(ctx, d, s.Handoff.RootLabel)
	if err != nil {
		return "", err
	}
	if e.Prepare != nil {
		if err := e.Prepare(); err != nil {
			return "", fmt.Errorf("preparing to mount %s: %w", part, err)
		}
	}
	dir := e.MountDir
	if dir == "" {
		dir = "/run/rivet-handoff"
	}
	if err := writeInto(part, dir, files); err != nil {
		return "", err
	}
	progress(shared.Progress{Done: int64(len(files)), Total: int64(len(files))})
	log.Info("handed off to the installed OS", "partition", part, "files", len(files))
	return shared.StepSucceeded, nil
}

// findRoot rereads d's partition table and returns the one partition whose file system
// carries label.
func (e *Executor) findRoot(ctx context.Context, d *disk.Device, label string) (string, error) {
	f, err := disk.OpenExclusive(d, 0)
	if err != nil {
		return "", err
	}
	parts, err := e.kernelPartitions(ctx, f, d)
	f.Close()
	if err != nil {
		return "", err
	}
	var found, ext []string
	for _, p := range parts {
		if got, ok := extLabel(p); ok {
			ext = append(ext, p+" ("+got+")")
			if got == label {
				found = append(found, p)
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", step.Permanent(fmt.Errorf("no ext4 file system labelled %q on %s (ext file systems seen: %s): build the "+
			"image with its root labelled %q (mkfs.ext4 -L %s), or name its label in the role's image.root_label, then re-plan",
			label, d.Path, orNone(ext), label, label))
	}
	return "", step.Permanent(fmt.Errorf("%s has %d file systems labelled %q (%s): the root label must be unique; "+
		"set image.root_label in the role", d.Path, len(found), label, strings.Join(found, ", ")))
}

// kernelPartitions has the kernel read d's partition table again and lists the
// partition devices it made. A kernel built without the MBR and GPT parsers finds none;
// then Rivet reads the table itself and adds the partitions (BLKPG, as partx -a does).
func (e *Executor) kernelPartitions(ctx context.Context, f *os.File, d *disk.Device) ([]string, error) {
	if err := disk.RereadPartitions(f); err != nil && !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("rereading the partition table of %s: %w", d.Path, err)
	}
	parts, err := e.partitions(ctx, d, time.Now().Add(partitionWait))
	if err != nil || len(parts) > 0 {
		return parts, err
	}
	extents := disk.OldPartitions(f, d.Size, d.LogicalBlockSize)
	if len(extents) == 0 {
		return nil, nil
	}
	added := map[int64]bool{}
	for _, x := range extents {
		if added[x.Start] { // a hybrid MBR lists GPT partitions twice
			continue
		}
		if err := disk.AddPartition(f, len(added)+1, x.Start, x.Length); err != nil {
			return nil, fmt.Errorf("adding partition %d of %s to the kernel: %w", len(added)+1, d.Path, err)
		}
		added[x.Start] = true
	}
	return e.partitions(ctx, d, time.Now().Add(partitionWait))
}

// partitions lists d's partition devices once the kernel has made their nodes (until
// deadline). The
// list comes from the kernel's own sysfs (not the Resolver's, which tests may fake for
// disk identity): partitions are whatever the kernel found in the table just reread.
func (e *Executor) partitions(ctx context.Context, d *disk.Device, deadline time.Time) ([]string, error) {
	sysDir := filepath.Join("/sys/block", d.Name)
	for {
		var parts []string
		missing := false
		entries, _ := os.ReadDir(sysDir)
		for _, ent := range entries {
			if _, err := os.Stat(filepath.Join(sysDir, ent.Name(), "partition")); err != nil {
				continue
			}
			dev := filepath.Join(orDefault(e.Resolver.DevRoot, "/dev"), ent.Name())
			if _, err := os.Stat(dev); err != nil {
				missing = true
			}
			parts = append(parts, dev)
		}
		// BLKRRPART and BLKPG update sysfs before they return; only the /dev nodes
		// (devtmpfs) may lag, so an empty list is final at once.
		if !missing || time.Now().After(deadline) {
			return parts, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// extLabel reads the volume label of an ext2/3/4 file system; ok is false when dev
// cannot be read or holds no ext file system.
func extLabel(dev string) (label string, ok bool) {
	f, err := os.Open(dev)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return "", false
	}
	if sb[0x38] != 0x53 || sb[0x39] != 0xEF { // s_magic 0xEF53, little endian
		return "", false
	}
	name := sb[0x78 : 0x78+16] // s_volume_name
	if i := strings.IndexByte(string(name), 0); i >= 0 {
		name = name[:i]
	}
	return string(name), true
}

// writeInto mounts part at dir, writes files, flushes and unmounts.
func writeInto(part, dir string, files []File) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount(part, dir, "ext4", unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mounting %s (ext4): %w", part, err)
	}
	defer func() {
		if uerr := unix.Unmount(dir, 0); uerr != nil && err == nil {
			err = fmt.Errorf("unmounting %s: %w", dir, uerr)
		}
	}()
	for _, f := range files {
		if err := writeFile(dir, f); err != nil {
			return err
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// writeFile writes one file under root atomically, so a power cut leaves the old file
// or the new one.
func writeFile(root string, f File) error {
	if !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path {
		return step.Permanent(fmt.Errorf("handoff file path %q: want a clean absolute path", f.Path))
	}
	target := filepath.Join(root, f.Path)
	dirMode := os.FileMode(0o755)
	if f.Mode&0o077 == 0 {
		dirMode = 0o700 // a secret's directory is private too
	}
	if err := os.MkdirAll(filepath.Dir(target), dirMode); err != nil {
		return err
	}
	return atomicfile.Write(target, f.Data, f.Mode)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}
