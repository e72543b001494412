package inventory

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
)

// probeSize covers every superblock probeFS looks at (btrfs's is the farthest, at 64 KiB).
const probeSize = 0x10000 + 0x1000

// probeFS recognises the file system (or volume signature) at the start of r, the way
// blkid names it, and reads its label where that is cheap. It knows the file systems a
// server's disks hold in practice; anything else is "".
//
// In an initramfs there is no udev database and nothing is mounted, so this is the only
// way to tell an operator that the disk about to be wiped holds an ext4 named "data".
func probeFS(r io.ReaderAt) (fsType, label string) {
	buf := make([]byte, probeSize)
	n, err := r.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return "", ""
	}
	b := superblock(buf[:n])
	switch {
	case b.le16(0x438) == 0xef53:
		return extVariant(b), b.str(0x478, 16)
	case b.has(0, "XFSB"):
		return "xfs", b.str(108, 12)
	case b.has(0x10040, "_BHRfS_M"):
		return "btrfs", b.str(0x1012b, 256)
	case b.has(4086, "SWAPSPACE2") || b.has(4086, "SWAP-SPACE"):
		return "swap", b.str(1024+28, 16)
	case b.has(0x8001, "CD001"):
		return "iso9660", strings.TrimRight(b.str(0x8028, 32), " ")
	case b.has(512, "LABELONE") && b.has(512+24, "LVM2 001"):
		return "LVM2_member", ""
	case b.has(0, "hsqs"):
		return "squashfs", ""
	case b.le32(4096) == 0xa92b4efc || b.le32(0) == 0xa92b4efc:
		return "linux_raid_member", ""
	case b.has(3, "NTFS    "):
		return "ntfs", ""
	case b.le16(510) == 0xaa55 && b.has(0x52, "FAT32   "):
		return "vfat", fatLabel(b.str(0x47, 11))
	case b.le16(510) == 0xaa55 && (b.has(0x36, "FAT16   ") || b.has(0x36, "FAT12   ")):
		return "vfat", fatLabel(b.str(0x2b, 11))
	}
	return "", ""
}

// extVariant tells ext4 from ext3 and ext2 by their feature flags, as blkid does.
func extVariant(b superblock) string {
	const (
		compatHasJournal = 0x4
		incompatExtents  = 0x40
		incompat64Bit    = 0x80
		incompatFlexBG   = 0x200
	)
	compat, incompat := b.le32(0x45c), b.le32(0x460)
	switch {
	case incompat&(incompatExtents|incompat64Bit|incompatFlexBG) != 0:
		return "ext4"
	case compat&compatHasJournal != 0:
		return "ext3"
	default:
		return "ext2"
	}
}

func fatLabel(l string) string {
	l = strings.TrimRight(l, " ")
	if l == "NO NAME" {
		return ""
	}
	return l
}

// superblock is the first bytes of a device; reads past its end give zero values.
type superblock []byte

func (b superblock) has(off int, magic string) bool {
	return off+len(magic) <= len(b) && string(b[off:off+len(magic)]) == magic
}

func (b superblock) le16(off int) uint16 {
	if off+2 > len(b) {
		return 0
	}
	return binary.LittleEndian.Uint16(b[off:])
}

func (b superblock) le32(off int) uint32 {
	if off+4 > len(b) {
		return 0
	}
	return binary.LittleEndian.Uint32(b[off:])
}

// str reads a NUL-padded label field.
func (b superblock) str(off, n int) string {
	if off+n > len(b) {
		return ""
	}
	field := b[off : off+n]
	if i := bytes.IndexByte(field, 0); i >= 0 {
		field = field[:i]
	}
	return strings.ToValidUTF8(string(field), "")
}
