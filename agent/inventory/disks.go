package inventory

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/jaypipes/ghw"

	"github.com/rivetmetal/rivet/shared"
)

// skippedDiskPrefixes are block devices that can never hold an installed OS: RAM disks,
// compressed swap, device-mapper and network block devices, optical and floppy drives.
// Loop devices are skipped unless Options.IncludeLoop.
var skippedDiskPrefixes = []string{"ram", "zram", "dm-", "nbd", "sr", "fd", "mtdblock"}

// disks lists block devices with ghw, then completes what ghw reads from the udev
// database (absent in an initramfs) from sysfs and from the devices themselves. Where
// sysfs knows a serial or WWN it wins over udev, so that the RAM agent and the installed
// OS name the same disk the same way.
func (c *collector) disks(ctx context.Context) (func(*shared.Inventory), error) {
	info, err := ghw.Block(c.ghwOptions()...)
	if err != nil {
		return nil, fmt.Errorf("listing block devices: %w", err)
	}
	var out []shared.Disk
	for _, d := range info.Disks {
		if d == nil || c.skipDisk(d.Name, d.SizeBytes) {
			continue
		}
		out = append(out, c.disk(d))
	}
	slices.SortFunc(out, func(a, b shared.Disk) int { return strings.Compare(a.Name, b.Name) })
	return func(inv *shared.Inventory) { inv.Disks = out }, nil
}

func (c *collector) skipDisk(name string, size uint64) bool {
	if size == 0 || name == "" || len(name) > 64 {
		return true // empty card readers and drives without media, unused loop devices
	}
	if strings.HasPrefix(name, "loop") {
		return !c.opts.IncludeLoop || c.sys.read("block", name, "loop", "backing_file") == ""
	}
	for _, p := range skippedDiskPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func (c *collector) disk(d *ghw.Disk) shared.Disk {
	rotational := c.sys.read("block", d.Name, "queue", "rotational") == "1"
	out := shared.Disk{
		Name:       d.Name,
		SizeBytes:  d.SizeBytes,
		Rotational: rotational,
		Removable:  d.IsRemovable,
		Type:       diskType(d.Name, rotational),
	}
	id := c.sys.diskIdentity(d.Name)
	out.Serial = firstOf(id.Serial, clean(d.SerialNumber))
	out.WWN = firstOf(id.WWN, clean(d.WWN))
	out.Model = firstOf(id.Model, clean(strings.ReplaceAll(d.Model, "_", " ")))
	if strings.HasPrefix(d.Name, "loop") && out.Serial == "" {
		// Loop devices have no serial; naming them by their backing file lets a plan
		// (and the disk executor's tests) address one exactly, as it would a real disk.
		out.Serial = truncate("loop:"+c.sys.read("block", d.Name, "loop", "backing_file"), 1024)
	}
	number := map[string]int{}
	for _, p := range d.Partitions {
		if p != nil {
			out.Partitions = append(out.Partitions, c.partition(p))
			number[p.Name] = c.partitionNumber(d.Name, p.Name)
		}
	}
	// ghw lists partitions in directory order (sda1, sda10, sda2); people count.
	slices.SortFunc(out.Partitions, func(a, b shared.Partition) int { return number[a.Name] - number[b.Name] })
	return out
}

// diskType classifies a disk for role selectors by its kernel name and rotation.
func diskType(name string, rotational bool) string {
	switch {
	case strings.HasPrefix(name, "nvme"):
		return "nvme"
	case strings.HasPrefix(name, "vd"):
		return "virtio"
	case strings.HasPrefix(name, "loop"):
		return "unknown"
	case rotational:
		return "hdd"
	default:
		return "ssd"
	}
}

// partition reports one partition. ghw knows the type and label of mounted partitions
// and, with udev, of the others; in an initramfs nothing is mounted and there is no
// udev, so the file system is recognised from its superblock.
func (c *collector) partition(p *ghw.Partition) shared.Partition {
	out := shared.Partition{
		Name:      p.Name,
		SizeBytes: p.SizeBytes,
		FSType:    clean(p.Type),
		Label:     clean(p.FilesystemLabel),
	}
	if out.FSType == "" || out.Label == "" {
		fsType, label := probeDevice(filepath.Join(c.dev, p.Name))
		out.FSType = firstOf(out.FSType, fsType)
		if out.FSType == fsType {
			out.Label = firstOf(out.Label, label)
		}
	}
	return out
}

func (c *collector) partitionNumber(disk, part string) int {
	n, err := strconv.Atoi(c.sys.read("block", disk, part, "partition"))
	if err != nil {
		return 1 << 20
	}
	return n
}

// probeDevice recognises the file system on a block device; "" when the device cannot
// be opened (no /dev node, no permission) or holds nothing Rivet knows.
func probeDevice(path string) (fsType, label string) {
	f, err := os.Open(path)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	return probeFS(f)
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
