package boot

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// mountSpec is one filesystem the RAM agent needs. Debian's kernel has
// CONFIG_DEVTMPFS_MOUNT unset, so /dev is empty until we mount devtmpfs ourselves.
type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	onlyIf                 string // mount only when this path exists
	// optional filesystems may be missing from the kernel (Debian builds efivarfs as a
	// module): the agent runs without them.
	optional bool
}

var mountTable = []mountSpec{
	{source: "proc", target: "/proc", fstype: "proc", flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{source: "sysfs", target: "/sys", fstype: "sysfs", flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: unix.MS_NOSUID, data: "mode=0755"},
	{source: "devpts", target: "/dev/pts", fstype: "devpts", flags: unix.MS_NOSUID | unix.MS_NOEXEC, data: "gid=5,mode=0620,ptmxmode=0666"},
	{source: "tmpfs", target: "/dev/shm", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=1777"},
	{source: "tmpfs", target: "/tmp", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=1777"},
	{source: "tmpfs", target: "/run", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=0755"},
	{source: "efivarfs", target: "/sys/firmware/efi/efivars", fstype: "efivarfs",
		flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, onlyIf: "/sys/firmware/efi/efivars", optional: true},
}

// mountAll mounts what mountTable lists, skipping what is already mounted (the agent
// may run with --mode=ram under another init), and adds the /dev links programs expect.
func mountAll() error {
	for _, m := range mountTable {
		if m.onlyIf != "" {
			if _, err := os.Stat(m.onlyIf); err != nil {
				continue
			}
		}
		if isMountPoint(m.target) {
			continue
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("mount %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			if m.optional {
				continue
			}
			return fmt.Errorf("mount %s on %s: %w (is CONFIG_%s enabled in the kernel?)",
				m.fstype, m.target, err, strings.ToUpper(m.fstype))
		}
	}
	for link, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
	} {
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			_ = os.Symlink(target, link)
		}
	}
	return nil
}

// isMountPoint reports whether target appears in /proc/self/mountinfo. Before /proc is
// mounted that file does not exist, which correctly reports "nothing is mounted".
func isMountPoint(target string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Fields: id parent major:minor root mountpoint ...
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == target {
			return true
		}
	}
	return false
}
