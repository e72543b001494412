package disk

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

// fakeDisk writes one block device into a made-up sysfs tree. files maps paths relative
// to /sys/block/<name> to contents.
func fakeDisk(t *testing.T, root, name string, files map[string]string) {
	t.Helper()
	base := map[string]string{"dev": "254:0\n", "size": "2097152\n", "queue/logical_block_size": "512\n"}
	for k, v := range files {
		base[k] = v
	}
	for rel, content := range base {
		p := filepath.Join(root, "block", name, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func vpd80(serial string) string {
	return string([]byte{0, 0x80, 0, byte(len(serial))}) + serial
}

// vpd83NAA is a VPD page 0x83 with one binary NAA designator of the logical unit, after
// a T10 vendor id designator that must be ignored.
func vpd83NAA(naa []byte) string {
	t10 := append([]byte{0x02, 0x01, 0, 8}, "ATA     "...)
	des := append([]byte{0x01, 0x03, 0, byte(len(naa))}, naa...)
	body := append(t10, des...)
	return string(append([]byte{0, 0x83, 0, byte(len(body))}, body...))
}

func TestResolveFindsEachKindOfIdentity(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	fakeDisk(t, sys, "vda", map[string]string{"dev": "254:0", "serial": "VIRTIO-1\n"})
	fakeDisk(t, sys, "nvme0n1", map[string]string{"dev": "259:0", "device/serial": "  NVME123  \n", "wwid": "eui.0025388b71b0e0a1\n"})
	fakeDisk(t, sys, "sda", map[string]string{"dev": "8:0", "device/vpd_pg80": vpd80("  WD-ABC "), "device/wwid": "naa.5000c500a1b2c3d4\n"})
	fakeDisk(t, sys, "sdb", map[string]string{"dev": "8:16", "device/vpd_pg83": vpd83NAA([]byte{0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})})
	fakeDisk(t, sys, "loop3", map[string]string{"dev": "7:3", "loop/backing_file": "/var/lib/lab/disk0.img\n"})
	r := Resolver{SysRoot: sys, DevRoot: dev}
	for _, tc := range []struct {
		target shared.DiskTarget
		want   string
	}{
		{shared.DiskTarget{Serial: "VIRTIO-1"}, "vda"},
		{shared.DiskTarget{Serial: "nvme123"}, "nvme0n1"},
		{shared.DiskTarget{WWN: "0025388B71B0E0A1"}, "nvme0n1"},
		{shared.DiskTarget{Serial: "WD-ABC"}, "sda"},
		{shared.DiskTarget{WWN: "0x5000c500a1b2c3d4"}, "sda"},
		{shared.DiskTarget{Serial: "WD-ABC", WWN: "wwn-0x5000c500a1b2c3d4"}, "sda"},
		{shared.DiskTarget{WWN: "0x600102030405060708090a0b0c0d0e0f"}, "sdb"},
		{shared.DiskTarget{Serial: "loop:/var/lib/lab/disk0.img"}, "loop3"},
	} {
		_, err := r.Resolve(tc.target)
		// The /dev root is empty, so a match ends in the device-node check, which names
		// the disk that matched: proof that exactly that disk was chosen.
		if err == nil || !strings.Contains(err.Error(), "disk "+tc.want+":") {
			t.Errorf("%+v: want a match on %s, got %v", tc.target, tc.want, err)
		}
	}
}

func TestResolveRefusesNoneOrSeveral(t *testing.T) {
	sys := t.TempDir()
	fakeDisk(t, sys, "sda", map[string]string{"serial": "SAME"})
	fakeDisk(t, sys, "sdb", map[string]string{"serial": "SAME", "wwid": "naa.1"})
	r := Resolver{SysRoot: sys, DevRoot: t.TempDir()}
	for _, tc := range []struct {
		target shared.DiskTarget
		want   string
	}{
		{shared.DiskTarget{Serial: "MISSING"}, `no disk matches serial "MISSING"; disks present: sda serial=SAME, sdb serial=SAME wwn=naa.1`},
		{shared.DiskTarget{Serial: "SAME"}, "matches 2 disks (sda, sdb)"},
		{shared.DiskTarget{Serial: "SAME", WWN: "naa.2"}, "no disk matches"},
		{shared.DiskTarget{}, "neither a serial nor a WWN"},
	} {
		_, err := r.Resolve(tc.target)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !step.IsPermanent(err) {
			t.Errorf("%+v: want a permanent error containing %q, got %v", tc.target, tc.want, err)
		}
	}
	_, err := r.Resolve(shared.DiskTarget{Serial: "MISSING"})
	if step.HintOf(err) == "" {
		t.Error("a missing disk gives the operator no hint")
	}
}

func TestResolveRefusesAStaleDeviceNode(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	fakeDisk(t, sys, "sda", map[string]string{"serial": "S1"})
	if err := os.WriteFile(filepath.Join(dev, "sda"), nil, 0o644); err != nil { // a plain file, not a block device
		t.Fatal(err)
	}
	_, err := Resolver{SysRoot: sys, DevRoot: dev}.Resolve(shared.DiskTarget{Serial: "S1"})
	if err == nil || !strings.Contains(err.Error(), "is not block device 254:0") || !step.IsPermanent(err) {
		t.Fatalf("want a refusal of the fake node, got %v", err)
	}
}

func TestCheckUnused(t *testing.T) {
	sys, proc := t.TempDir(), t.TempDir()
	fakeDisk(t, sys, "sda", map[string]string{"dev": "8:0", "sda1/partition": "1", "sda1/dev": "8:1", "sda2/partition": "2", "sda2/dev": "8:2"})
	fakeDisk(t, sys, "sdb", map[string]string{"dev": "8:16", "sdb1/partition": "1", "sdb1/dev": "8:17", "sdb1/holders/dm-0": ""})
	fakeDisk(t, sys, "sdc", map[string]string{"dev": "8:32"})
	mountinfo := "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n" +
		"30 22 0:5 / /dev rw - devtmpfs udev rw\n"
	if err := os.MkdirAll(filepath.Join(proc, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "self", "mountinfo"), []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	r := Resolver{SysRoot: sys, ProcRoot: proc}
	for name, want := range map[string]string{
		"sda": "sda2 is mounted at /",
		"sdb": "sdb1 is held by dm-0",
		"sdc": "",
	} {
		d, err := r.describe(name)
		if err != nil {
			t.Fatal(err)
		}
		err = r.CheckUnused(d)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: unused disk refused: %v", name, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want) || !step.IsPermanent(err)):
			t.Errorf("%s: want a permanent refusal containing %q, got %v", name, want, err)
		}
	}
	// Without a mount table the disk cannot be shown to be free: refuse.
	d, _ := r.describe("sdc")
	if err := (Resolver{SysRoot: sys, ProcRoot: t.TempDir()}).CheckUnused(d); err == nil {
		t.Error("no mount table, and the disk was declared unused")
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/mnt/my\040disk\134x`); got != `/mnt/my disk\x` {
		t.Fatalf("got %q", got)
	}
}
