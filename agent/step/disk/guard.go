package disk

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

// hintInUse is the operator hint for a disk that is in use.
const hintInUse = "the planned install disk is in use on this machine (mounted, swap, LVM, RAID " +
	"or the running root): if the role names the wrong disk fix it and re-plan; otherwise " +
	"boot the machine into the Rivet agent (RAM) so that nothing holds the disk"

// ResolveUnused is Resolve and then CheckUnused: the one disk t names, refused when it
// is in use. Every step that writes a disk starts with it.
func (r Resolver) ResolveUnused(t shared.DiskTarget) (*Device, error) {
	d, err := r.Resolve(t)
	if err != nil {
		return nil, err
	}
	return d, r.CheckUnused(d)
}

// CheckUnused refuses a disk that is mounted, used as swap, or held by another block
// device (LVM, md RAID, dm-crypt) — directly or through one of its partitions. That covers
// the disk holding the running root: it is mounted, or under a device that is.
func (r Resolver) CheckUnused(d *Device) error {
	devs := map[[2]uint32]string{{d.Major, d.Minor}: d.Name}
	dirs := []string{filepath.Join(r.sys(), "block", d.Name)}
	parts, _ := os.ReadDir(dirs[0])
	for _, p := range parts {
		pdir := filepath.Join(dirs[0], p.Name())
		if _, err := os.Stat(filepath.Join(pdir, "partition")); err != nil {
			continue
		}
		if ma, mi, err := readDevNumber(filepath.Join(pdir, "dev")); err == nil {
			devs[[2]uint32{ma, mi}] = p.Name()
			dirs = append(dirs, pdir)
		}
	}
	for _, dir := range dirs {
		holders, _ := os.ReadDir(filepath.Join(dir, "holders"))
		if len(holders) > 0 {
			return step.WithHint(step.Permanent(fmt.Errorf("disk %s: %s is held by %s (LVM, RAID or dm-crypt); refusing to write",
				d.Name, filepath.Base(dir), holders[0].Name())), hintInUse)
		}
	}
	if where, err := r.mountedAt(devs); err != nil {
		return err
	} else if where != "" {
		return step.WithHint(step.Permanent(fmt.Errorf("disk %s: %s; refusing to write", d.Name, where)), hintInUse)
	}
	if where := r.swapOn(devs); where != "" {
		return step.WithHint(step.Permanent(fmt.Errorf("disk %s: %s; refusing to write", d.Name, where)), hintInUse)
	}
	return nil
}

// mountedAt says which of devs is mounted where, or "" when none is.
func (r Resolver) mountedAt(devs map[[2]uint32]string) (string, error) {
	f, err := os.Open(filepath.Join(r.proc(), "self", "mountinfo"))
	if err != nil {
		// Without the mount table we cannot prove the disk is free: refuse.
		return "", fmt.Errorf("reading the mount table to check the disk is unused: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mountPoint := unescapeMount(fields[4])
		if ma, mi, err := parseDevNumber(fields[2]); err == nil {
			if name, ok := devs[[2]uint32{ma, mi}]; ok {
				return fmt.Sprintf("%s is mounted at %s", name, mountPoint), nil
			}
		}
		// btrfs reports an anonymous device number: check the mount source as well.
		for i, fld := range fields {
			if fld == "-" && i+2 < len(fields) {
				if name, ok := devs[rdevOf(unescapeMount(fields[i+2]))]; ok {
					return fmt.Sprintf("%s is mounted at %s", name, mountPoint), nil
				}
				break
			}
		}
	}
	return "", sc.Err()
}

// swapOn says which of devs is an active swap device, or "".
func (r Resolver) swapOn(devs map[[2]uint32]string) string {
	f, err := os.Open(filepath.Join(r.proc(), "swaps"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] == "Filename" {
			continue
		}
		if name, ok := devs[rdevOf(unescapeMount(fields[0]))]; ok {
			return name + " is in use as swap"
		}
	}
	return ""
}

// rdevOf returns the device number of block device node path, or {0,0}.
func rdevOf(path string) [2]uint32 {
	var st unix.Stat_t
	if !strings.HasPrefix(path, "/") || unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return [2]uint32{}
	}
	return [2]uint32{unix.Major(st.Rdev), unix.Minor(st.Rdev)}
}

func parseDevNumber(s string) (uint32, uint32, error) {
	var ma, mi uint32
	if _, err := fmt.Sscanf(s, "%d:%d", &ma, &mi); err != nil {
		return 0, 0, err
	}
	return ma, mi, nil
}

// unescapeMount undoes the octal escapes (\040 for space) of mountinfo and swaps.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// OpenExclusive opens the disk for writing with O_EXCL, which the kernel refuses (EBUSY)
// while the disk or one of its partitions is mounted or claimed: the last guard, free of
// races with the checks above. extraFlags may add O_DIRECT.
func OpenExclusive(d *Device, extraFlags int) (*os.File, error) {
	f, err := os.OpenFile(d.Path, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC|extraFlags, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, step.WithHint(step.Permanent(fmt.Errorf("disk %s (%s) is busy: mounted or claimed by another "+
			"device or program; refusing to write", d.Name, d.Path)), hintInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("opening disk %s: %w", d.Path, err)
	}
	return f, nil
}
