package inventory

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jaypipes/ghw"

	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// newLoopDevice attaches a fresh sparse file of size bytes as a loop device, detached
// again in t.Cleanup, and returns the device's kernel name ("loop3") and the file.
func newLoopDevice(t *testing.T, size int64) (name, file string) {
	t.Helper()
	testenv.RequireRoot(t)
	losetup := testenv.RequireCommand(t, "losetup")
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	file = filepath.Join(t.TempDir(), "rvt"+hex.EncodeToString(suffix)+".img")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("detaching %s: %v: %s", dev, err, out)
		}
	})
	return filepath.Base(dev), file
}

func TestLoopDevicesOnlyWhenAsked(t *testing.T) {
	name, file := newLoopDevice(t, 24<<20)

	find := func(inv *shared.Inventory) *shared.Disk {
		for i := range inv.Disks {
			if inv.Disks[i].Name == name {
				return &inv.Disks[i]
			}
		}
		return nil
	}
	if d := find(Collect(context.Background(), Options{})); d != nil {
		t.Errorf("loop device %s listed without IncludeLoop: %+v", name, d)
	}
	inv := Collect(context.Background(), Options{IncludeLoop: true})
	d := find(inv)
	if d == nil {
		t.Fatalf("loop device %s missing with IncludeLoop; disks %+v, errors %v", name, inv.Disks, inv.Errors)
	}
	if d.SizeBytes != 24<<20 || d.Serial != "loop:"+file || d.Type != "unknown" {
		t.Errorf("loop disk = %+v, want 24 MiB, serial loop:%s, type unknown", d, file)
	}
}

// TestDiskPartitionsWithoutUdev fills a disk the way it looks in an initramfs: ghw found
// the partitions but, with no udev and nothing mounted, not their file systems. The
// probe reads them from the partition devices, and partitions come in numeric order.
func TestDiskPartitionsWithoutUdev(t *testing.T) {
	sysRoot, devRoot := t.TempDir(), t.TempDir()
	for name, number := range map[string]string{"sdd1": "1", "sdd2": "2", "sdd10": "10"} {
		dir := filepath.Join(sysRoot, "block", "sdd", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "partition"), []byte(number+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ext4 := make([]byte, 4096)
	binary.LittleEndian.PutUint16(ext4[0x438:], 0xef53)
	binary.LittleEndian.PutUint32(ext4[0x460:], 0x40)
	copy(ext4[0x478:], "rvtroot")
	swap := make([]byte, 8192)
	copy(swap[4086:], "SWAPSPACE2")
	for name, img := range map[string][]byte{"sdd1": ext4, "sdd2": swap} { // sdd10 has no /dev node
		if err := os.WriteFile(filepath.Join(devRoot, name), img, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := newCollector(Options{sysRoot: sysRoot, devRoot: devRoot})
	d := c.disk(&ghw.Disk{Name: "sdd", SizeBytes: 1 << 30, Partitions: []*ghw.Partition{
		{Name: "sdd1", SizeBytes: 512 << 20, Type: "unknown", FilesystemLabel: "unknown"},
		{Name: "sdd10", SizeBytes: 1 << 20, Type: "unknown"},
		{Name: "sdd2", SizeBytes: 256 << 20, Type: "unknown"},
	}})
	want := []shared.Partition{
		{Name: "sdd1", SizeBytes: 512 << 20, FSType: "ext4", Label: "rvtroot"},
		{Name: "sdd2", SizeBytes: 256 << 20, FSType: "swap"},
		{Name: "sdd10", SizeBytes: 1 << 20},
	}
	if len(d.Partitions) != len(want) {
		t.Fatalf("partitions = %+v, want %+v", d.Partitions, want)
	}
	for i := range want {
		if d.Partitions[i] != want[i] {
			t.Errorf("partition %d = %+v, want %+v", i, d.Partitions[i], want[i])
		}
	}
	if d.Type != "ssd" {
		t.Errorf("a non-rotational sd disk is %q, want ssd", d.Type)
	}
}

func TestDiskSelection(t *testing.T) {
	c := newCollector(Options{sysRoot: t.TempDir()})
	for _, tt := range []struct {
		name string
		size uint64
		skip bool
	}{
		{"sda", 1 << 30, false}, {"nvme0n1", 1 << 30, false}, {"vda", 1 << 30, false},
		{"md0", 1 << 30, false}, {"sdb", 0, true}, {"zram0", 1 << 30, true},
		{"ram0", 1 << 30, true}, {"dm-0", 1 << 30, true}, {"sr0", 1 << 30, true},
		{"nbd0", 1 << 30, true}, {"loop0", 1 << 30, true},
	} {
		if got := c.skipDisk(tt.name, tt.size); got != tt.skip {
			t.Errorf("skipDisk(%s, %d) = %v, want %v", tt.name, tt.size, got, tt.skip)
		}
	}
	for name, want := range map[string]string{"nvme1n1": "nvme", "vdb": "virtio", "loop2": "unknown", "sda": "ssd"} {
		if got := diskType(name, false); got != want {
			t.Errorf("diskType(%s) = %s, want %s", name, got, want)
		}
	}
	if got := diskType("sdb", true); got != "hdd" {
		t.Errorf("a rotational disk is %s, want hdd", got)
	}
}
