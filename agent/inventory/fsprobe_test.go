package inventory

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rivetmetal/rivet/internal/testenv"
)

func TestProbeFSCraftedSuperblocks(t *testing.T) {
	image := func(size int, edits ...func([]byte)) []byte {
		b := make([]byte, size)
		for _, e := range edits {
			e(b)
		}
		return b
	}
	put := func(off int, s string) func([]byte) { return func(b []byte) { copy(b[off:], s) } }
	le16 := func(off int, v uint16) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint16(b[off:], v) }
	}
	le32 := func(off int, v uint32) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(b[off:], v) }
	}

	tests := []struct {
		name      string
		img       []byte
		fs, label string
	}{
		{"ext4", image(4096, le16(0x438, 0xef53), le32(0x460, 0x2c2), put(0x478, "rootfs")), "ext4", "rootfs"},
		{"ext3", image(4096, le16(0x438, 0xef53), le32(0x45c, 0x4)), "ext3", ""},
		{"ext2", image(4096, le16(0x438, 0xef53)), "ext2", ""},
		{"xfs", image(4096, put(0, "XFSB"), put(108, "data")), "xfs", "data"},
		{"btrfs", image(probeSize, put(0x10040, "_BHRfS_M"), put(0x1012b, "pool")), "btrfs", "pool"},
		{"swap", image(8192, put(4086, "SWAPSPACE2"), put(1024+28, "swap0")), "swap", "swap0"},
		{"iso9660", image(0x9000, put(0x8001, "CD001"), put(0x8028, "DEBIAN 12                       ")), "iso9660", "DEBIAN 12"},
		{"lvm", image(4096, put(512, "LABELONE"), put(512+24, "LVM2 001")), "LVM2_member", ""},
		{"md 1.2", image(8192, le32(4096, 0xa92b4efc)), "linux_raid_member", ""},
		{"fat32", image(512, put(0x52, "FAT32   "), put(0x47, "EFI        "), le16(510, 0xaa55)), "vfat", "EFI"},
		{"fat16 no name", image(512, put(0x36, "FAT16   "), put(0x2b, "NO NAME    "), le16(510, 0xaa55)), "vfat", ""},
		{"fat without boot signature", image(512, put(0x52, "FAT32   ")), "", ""},
		{"zeros", image(probeSize), "", ""},
		{"empty", nil, "", ""},
		{"ext magic past the end", image(0x439, le16(0x437, 0xef53)), "", ""},
		{"label with bad utf8", image(4096, le16(0x438, 0xef53), put(0x478, "a\xffb")), "ext2", "ab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, label := probeFS(bytes.NewReader(tt.img))
			if fs != tt.fs || label != tt.label {
				t.Errorf("probeFS = %q %q, want %q %q", fs, label, tt.fs, tt.label)
			}
		})
	}
}

// TestProbeFSRealFilesystems checks the probe against what Debian's own mkfs tools write.
func TestProbeFSRealFilesystems(t *testing.T) {
	tests := []struct {
		tool      string
		args      func(path string) []string
		fs, label string
	}{
		{"mkfs.ext4", func(p string) []string { return []string{"-q", "-F", "-L", "rvtdata", p} }, "ext4", "rvtdata"},
		{"mkswap", func(p string) []string { return []string{"-L", "rvtswap", p} }, "swap", "rvtswap"},
		{"mkfs.vfat", func(p string) []string { return []string{"-F", "32", "-n", "RVTEFI", p} }, "vfat", "RVTEFI"},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			tool := testenv.RequireCommand(t, tt.tool)
			path := filepath.Join(t.TempDir(), "fs.img")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 64<<20); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(tool, tt.args(path)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tt.tool, err, out)
			}
			fs, label := probeDevice(path)
			if fs != tt.fs || label != tt.label {
				t.Errorf("probe of a %s image = %q %q, want %q %q", tt.tool, fs, label, tt.fs, tt.label)
			}
		})
	}
}
