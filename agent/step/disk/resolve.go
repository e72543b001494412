// Package disk finds the disk a plan names and prepares it: it wipes old signatures at both
// ends of the disk and optionally lays out a fresh, empty GPT. It also offers the disk
// lookup and the in-use guard to the image step, so that both steps agree on which
// /dev node "serial ABC123" is and both refuse a disk that is mounted.
//
// Rivet never chooses a disk by name or position: the plan says serial or WWN, the
// Resolver reads the identities the kernel exposes in sysfs, and anything other than
// exactly one match is refused before a single byte is written.
package disk

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

// Resolver maps a DiskTarget to a block device. The roots are configurable so that tests
// can present loop devices under made-up serials.
type Resolver struct {
	SysRoot  string // default /sys
	DevRoot  string // default /dev
	ProcRoot string // default /proc (mountinfo and swaps, for the in-use guard)
}

// Device is one whole-disk block device.
type Device struct {
	Name             string // kernel name, e.g. sda, nvme0n1
	Path             string // device node, e.g. /dev/sda
	Major, Minor     uint32
	Size             int64 // bytes
	LogicalBlockSize int   // bytes per LBA (512 or 4096)
	Serials          []string
	WWNs             []string
}

func (r Resolver) sys() string  { return orDefault(r.SysRoot, "/sys") }
func (r Resolver) dev() string  { return orDefault(r.DevRoot, "/dev") }
func (r Resolver) proc() string { return orDefault(r.ProcRoot, "/proc") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// hintTarget is the operator hint for a target that matched no disk or several.
const hintTarget = "compare the role's install_disk (serial or wwn) with the disks in this " +
	"machine's inventory (rivet machines show <id>), fix the role, then re-plan the machine"

// Resolve returns the one disk matching every identifier t sets. No match or more than one
// is a Permanent error: guessing is how the wrong disk gets wiped.
func (r Resolver) Resolve(t shared.DiskTarget) (*Device, error) {
	if t.Serial == "" && t.WWN == "" {
		return nil, step.Permanent(errors.New("disk target names neither a serial nor a WWN; refusing to pick a disk"))
	}
	entries, err := os.ReadDir(filepath.Join(r.sys(), "block"))
	if err != nil {
		return nil, fmt.Errorf("listing block devices in sysfs: %w", err)
	}
	var matches []*Device
	var seen []string
	for _, e := range entries {
		d, err := r.describe(e.Name())
		if err != nil {
			continue // not a disk we can use (no dev file): it cannot be the target either
		}
		seen = append(seen, d.describe())
		if d.matches(t) {
			matches = append(matches, d)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], r.checkNode(matches[0])
	case 0:
		sort.Strings(seen)
		return nil, step.WithHint(step.Permanent(fmt.Errorf("no disk matches %s; disks present: %s",
			describeTarget(t), orNone(strings.Join(seen, ", ")))), hintTarget)
	default:
		var names []string
		for _, d := range matches {
			names = append(names, d.Name)
		}
		return nil, step.WithHint(step.Permanent(fmt.Errorf("%s matches %d disks (%s), refusing to choose: "+
			"a cloned serial, or one disk seen over several paths (multipath)", describeTarget(t), len(matches),
			strings.Join(names, ", "))), hintTarget)
	}
}

// describe reads what sysfs knows about block device name.
func (r Resolver) describe(name string) (*Device, error) {
	dir := filepath.Join(r.sys(), "block", name)
	major, minor, err := readDevNumber(filepath.Join(dir, "dev"))
	if err != nil {
		return nil, err
	}
	sectors, err := readInt(filepath.Join(dir, "size"))
	if err != nil {
		return nil, err
	}
	lbs, err := readInt(filepath.Join(dir, "queue", "logical_block_size"))
	if err != nil || lbs < 512 {
		lbs = 512
	}
	d := &Device{Name: name, Path: filepath.Join(r.dev(), name), Major: major, Minor: minor,
		Size: sectors * 512, LogicalBlockSize: int(lbs)} // sysfs counts 512-byte sectors always
	for _, f := range []string{"serial", "device/serial"} {
		if s := readTrimmed(filepath.Join(dir, f)); s != "" {
			d.Serials = append(d.Serials, s)
		}
	}
	if s := readVPDSerial(filepath.Join(dir, "device", "vpd_pg80")); s != "" {
		d.Serials = append(d.Serials, s)
	}
	if len(d.Serials) == 0 && strings.HasPrefix(name, "loop") {
		// Loop devices have no serial; the inventory names them by their backing file,
		// so a plan can address one exactly (the lab and tests do).
		if f := readTrimmed(filepath.Join(dir, "loop", "backing_file")); f != "" {
			d.Serials = append(d.Serials, "loop:"+f)
		}
	}
	for _, f := range []string{"wwid", "device/wwid"} {
		if s := readTrimmed(filepath.Join(dir, f)); s != "" {
			d.WWNs = append(d.WWNs, s)
		}
	}
	d.WWNs = append(d.WWNs, readVPDNAAs(filepath.Join(dir, "device", "vpd_pg83"))...)
	return d, nil
}

// checkNode makes sure the /dev node is the block device sysfs described, so that a stale
// or hand-made node cannot redirect the writes.
func (r Resolver) checkNode(d *Device) error {
	var st unix.Stat_t
	if err := unix.Stat(d.Path, &st); err != nil {
		return fmt.Errorf("disk %s: device node %s: %w", d.Name, d.Path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != d.Major || unix.Minor(st.Rdev) != d.Minor {
		return step.Permanent(fmt.Errorf("disk %s: %s is not block device %d:%d; refusing to write through it",
			d.Name, d.Path, d.Major, d.Minor))
	}
	return nil
}

func (d *Device) matches(t shared.DiskTarget) bool {
	if t.Serial != "" && !anyEqual(d.Serials, t.Serial, normalizeSerial) {
		return false
	}
	if t.WWN != "" && !anyEqual(d.WWNs, t.WWN, NormalizeWWN) {
		return false
	}
	return true
}

func (d *Device) describe() string {
	s := d.Name
	if len(d.Serials) > 0 {
		s += " serial=" + d.Serials[0]
	}
	if len(d.WWNs) > 0 {
		s += " wwn=" + d.WWNs[0]
	}
	return s
}

func anyEqual(have []string, want string, norm func(string) string) bool {
	w := norm(want)
	for _, h := range have {
		if norm(h) == w && w != "" {
			return true
		}
	}
	return false
}

// normalizeSerial drops the padding ATA serials carry and ignores case.
func normalizeSerial(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// NormalizeWWN reduces the spellings of a world wide name to one: udev's "0x5000c500…",
// sysfs's "naa.5000c500…" or "eui.…", and "wwn-0x…" from /dev/disk/by-id all compare equal.
func NormalizeWWN(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "wwn-")
	for _, p := range []string{"naa.", "eui.", "0x"} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

func describeTarget(t shared.DiskTarget) string {
	var parts []string
	if t.Serial != "" {
		parts = append(parts, fmt.Sprintf("serial %q", t.Serial))
	}
	if t.WWN != "" {
		parts = append(parts, fmt.Sprintf("wwn %q", t.WWN))
	}
	s := strings.Join(parts, " and ")
	if t.Name != "" {
		s += fmt.Sprintf(" (planned as %s)", t.Name)
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func readTrimmed(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(raw))
}

func readInt(path string) (int64, error) {
	return strconv.ParseInt(readTrimmed(path), 10, 64)
}

// readDevNumber parses a sysfs "dev" file ("8:0").
func readDevNumber(path string) (major, minor uint32, err error) {
	raw := readTrimmed(path)
	a, b, ok := strings.Cut(raw, ":")
	if !ok {
		return 0, 0, fmt.Errorf("%s: %q is not major:minor", path, raw)
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%s: %q is not major:minor", path, raw)
	}
	return uint32(ma), uint32(mi), nil
}

// readVPDSerial reads the unit serial number from a SCSI VPD page 0x80 (SATA and SAS
// disks expose it; their sysfs has no plain serial file).
func readVPDSerial(path string) string {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) || err != nil || len(raw) < 4 || raw[1] != 0x80 {
		return ""
	}
	n := int(raw[2])<<8 | int(raw[3])
	if 4+n > len(raw) {
		n = len(raw) - 4
	}
	return strings.TrimSpace(strings.Trim(string(raw[4:4+n]), "\x00"))
}

// readVPDNAAs returns the binary NAA designators of the logical unit in a SCSI VPD page
// 0x83 as "0x…", the form the inventory reports when sysfs has no wwid file.
func readVPDNAAs(path string) []string {
	page, err := os.ReadFile(path)
	if err != nil || len(page) < 4 || page[1] != 0x83 {
		return nil
	}
	end := min(4+(int(page[2])<<8|int(page[3])), len(page))
	var out []string
	for off := 4; off+4 <= end; {
		codeSet, assoc, kind := page[off]&0x0f, (page[off+1]>>4)&0x3, page[off+1]&0x0f
		n := int(page[off+3])
		des := page[off+4 : min(off+4+n, end)]
		off += 4 + n
		if kind == 3 && assoc == 0 && codeSet == 1 && len(des) >= 8 {
			out = append(out, "0x"+hex.EncodeToString(des))
		}
	}
	return out
}
