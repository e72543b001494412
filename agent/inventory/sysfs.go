package inventory

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// sysfs reads the kernel's view of the hardware. root is "/sys" on a machine and a fake
// tree in tests. Readers return "" for anything missing: sysfs differs between kernels,
// buses and drivers, and a missing attribute is normal, not an error.
type sysfs struct {
	root string
}

func (s sysfs) path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

// read returns an attribute's text without surrounding white space or NULs.
func (s sysfs) read(elem ...string) string {
	data, err := os.ReadFile(s.path(elem...))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.Trim(string(data), "\x00"))
}

// link returns the last element of a symlink's target, e.g. the driver's name for
// .../device/driver.
func (s sysfs) link(elem ...string) string {
	target, err := os.Readlink(s.path(elem...))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

// diskIdentity is what names a disk for the plan: its serial and WWN, in the same form
// udev would give them, so that the RAM agent (no udev) and the installed OS (udev)
// report the same values for the same disk.
type diskIdentity struct {
	Serial string
	WWN    string
	Model  string
}

// diskIdentity reads a block device's serial, WWN and model from sysfs.
//
// Serial, first found: /sys/block/X/serial (virtio-blk), /sys/block/X/device/serial
// (NVMe controllers, some SCSI hosts), SCSI VPD page 0x80 (SAS, and SATA through libata).
// WWN, first found: /sys/block/X/wwid (NVMe namespaces: "eui.…", "nvme.…", as udev's
// ID_WWN), /sys/block/X/device/wwid ("naa.…" becomes udev's "0x…"), VPD page 0x83 (its
// best NAA designator, as "0x…").
func (s sysfs) diskIdentity(name string) diskIdentity {
	var id diskIdentity
	for _, p := range [][]string{{"block", name, "serial"}, {"block", name, "device", "serial"}} {
		if v := s.read(p...); v != "" {
			id.Serial = v
			break
		}
	}
	if id.Serial == "" {
		if page, err := os.ReadFile(s.path("block", name, "device", "vpd_pg80")); err == nil {
			id.Serial = parseVPDSerial(page)
		}
	}
	if v := s.read("block", name, "wwid"); v != "" {
		id.WWN = v
	} else if v := s.read("block", name, "device", "wwid"); v != "" {
		id.WWN = wwnFromSCSIWWID(v)
	}
	if id.WWN == "" {
		if page, err := os.ReadFile(s.path("block", name, "device", "vpd_pg83")); err == nil {
			id.WWN = parseVPDWWN(page)
		}
	}
	id.Model = collapseSpaces(s.read("block", name, "device", "model"))
	return id
}

// wwnFromSCSIWWID turns the kernel's SCSI wwid attribute into udev's ID_WWN form. Only
// NAA designators are world wide names; "t10." and "eui." ids of SCSI disks are not
// (udev gives them no ID_WWN either).
func wwnFromSCSIWWID(wwid string) string {
	naa, ok := strings.CutPrefix(wwid, "naa.")
	if !ok || !isHex(naa) {
		return ""
	}
	return "0x" + strings.ToLower(naa)
}

// parseVPDSerial reads the unit serial number from a VPD page 0x80: a 4-byte header
// whose last two bytes give the length, then the serial in ASCII.
func parseVPDSerial(page []byte) string {
	if len(page) < 4 || page[1] != 0x80 {
		return ""
	}
	n := int(page[2])<<8 | int(page[3])
	body := page[4:]
	if n < len(body) {
		body = body[:n]
	}
	return strings.TrimSpace(strings.Trim(string(body), "\x00"))
}

// parseVPDWWN picks the NAA designator of the logical unit from a VPD page 0x83, in the
// order the kernel's wwid and udev's scsi_id prefer: IEEE registered extended (NAA 6),
// IEEE registered (5), IEEE extended (2), then locally assigned (3).
func parseVPDWWN(page []byte) string {
	if len(page) < 4 || page[1] != 0x83 {
		return ""
	}
	end := 4 + (int(page[2])<<8 | int(page[3]))
	if end > len(page) {
		end = len(page)
	}
	best, bestRank := "", 0
	rank := map[byte]int{6: 4, 5: 3, 2: 2, 3: 1}
	for off := 4; off+4 <= end; {
		codeSet, assoc, kind := page[off]&0x0f, (page[off+1]>>4)&0x3, page[off+1]&0x0f
		n := int(page[off+3])
		des := page[off+4 : min(off+4+n, end)]
		off += 4 + n
		if kind != 3 || assoc != 0 || codeSet != 1 || len(des) < 8 {
			continue // not a binary NAA designator of the logical unit
		}
		if r := rank[des[0]>>4]; r > bestRank {
			best, bestRank = "0x"+hex.EncodeToString(des), r
		}
	}
	return best
}

// collapseSpaces trims and squeezes runs of spaces (SCSI models are space-padded).
func collapseSpaces(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func isHex(s string) bool {
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return s != ""
}

// pciAddressPattern is a PCI address as sysfs names devices: domain:bus:slot.function.
var pciAddressPattern = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// pciAddressOf returns the PCI address of the device behind a class device (a NIC's
// /sys/class/net/X/device), also when a virtio device sits between the two, as on
// virtual machines. USB and platform devices get no address: they are not on the bus
// and their controller's address would name several devices at once.
func (s sysfs) pciAddressOf(elem ...string) string {
	dev, err := filepath.EvalSymlinks(s.path(elem...))
	if err != nil {
		return ""
	}
	if base := filepath.Base(dev); pciAddressPattern.MatchString(base) {
		return base
	} else if strings.HasPrefix(base, "virtio") {
		if parent := filepath.Base(filepath.Dir(dev)); pciAddressPattern.MatchString(parent) {
			return parent
		}
	}
	return ""
}
