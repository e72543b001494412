package integration

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// An installed machine's disk, as small as it gets: one active FAT partition of type EF
// (an ESP that BIOS can boot too) holding the same kernel and a busybox initramfs whose
// /init prints diskMarker with a per-run token and the loader that started it, then powers
// off. BIOS boots it through syslinux's MBR and SYSLINUX; UEFI through OVMF's removable-
// media path, \EFI\BOOT\BOOTX64.EFI, a unified kernel image (systemd's stub with the
// kernel, initramfs and command line inside). Recipe: docs/lab-notes.md, "Installing to disk and booting it".
const diskMarker = "RIVET-TEST-DISK-BOOTED"

// diskTools are what buildOSDisk runs; the test fails in CI and skips elsewhere without them.
var diskTools = []string{"mkfs.vfat", "mcopy", "mmd", "syslinux", "objcopy"}

var diskFiles = []string{"/bin/busybox", "/usr/lib/syslinux/mbr/mbr.bin", "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"}

func requireDiskTools(t *testing.T) {
	t.Helper()
	for _, c := range diskTools {
		testenv.RequireCommand(t, c)
	}
	for _, f := range diskFiles {
		testenv.RequireFile(t, f)
	}
	requireStatic(t, "/bin/busybox", "busybox-static")
}

// requireStatic needs path to be a statically linked executable, because it is copied
// alone into the disk OS's initramfs: a dynamic one (Debian's busybox, which replaces
// busybox-static on install and vice versa) finds no loader there, and the kernel says
// only "Failed to execute /init".
func requireStatic(t *testing.T, path, pkg string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		testenv.Missing(t, "%s is not a readable ELF executable (%v); install %s (apt-get install %s)", path, err, pkg, pkg)
		return
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			testenv.Missing(t, "%s is dynamically linked; install %s (apt-get install %s)", path, pkg, pkg)
		}
	}
}

// buildOSDisk writes the disk image into dir and returns its path. kernel is the agent's
// vmlinuz (a stock Debian kernel: EFI stub, serial console and gzip initramfs built in).
func buildOSDisk(t *testing.T, dir, kernel, token string) string {
	t.Helper()
	work := filepath.Join(dir, "osdisk")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	path := func(name string) string { return filepath.Join(work, name) }
	diskWrite(t, path("initrd.gz"), diskInitramfs(t, token))
	diskWrite(t, path("syslinux.cfg"), []byte("SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT os\nLABEL os\n"+
		"  KERNEL /vmlinuz\n  INITRD /initrd.gz\n  APPEND console=ttyS0,115200 quiet panic=-1 no_timer_check rivet.test.loader=syslinux\n"))
	diskWrite(t, path("cmdline.txt"), []byte("console=ttyS0,115200 quiet panic=-1 no_timer_check rivet.test.loader=uki"))

	// The UKI. Section addresses from systemd's ukify for a stub of this age; the kernel
	// (8 MB) must end below .initrd.
	diskRun(t, "objcopy",
		"--add-section", ".osrel=/etc/os-release", "--change-section-vma", ".osrel=0x20000",
		"--add-section", ".cmdline="+path("cmdline.txt"), "--change-section-vma", ".cmdline=0x30000",
		"--add-section", ".linux="+kernel, "--change-section-vma", ".linux=0x2000000",
		"--add-section", ".initrd="+path("initrd.gz"), "--change-section-vma", ".initrd=0x3000000",
		"/usr/lib/systemd/boot/efi/linuxx64.efi.stub", path("uki.efi"))

	// The FAT file system, in a file of its own: mtools and syslinux work on images, so no
	// loop device or mount is needed. -h 2048 records the partition's offset (hidden
	// sectors) in the boot sector, which SYSLINUX's boot code needs to find itself.
	const fatKiB = 40 << 10
	fat := path("fat.img")
	diskRun(t, "mkfs.vfat", "-h", "2048", "-n", "RIVETOS", "-C", fat, fmt.Sprint(fatKiB))
	diskRun(t, "mcopy", "-i", fat, kernel, "::/vmlinuz")
	diskRun(t, "mcopy", "-i", fat, path("initrd.gz"), "::/initrd.gz")
	diskRun(t, "mcopy", "-i", fat, path("syslinux.cfg"), "::/syslinux.cfg")
	diskRun(t, "mmd", "-i", fat, "::/EFI", "::/EFI/BOOT")
	diskRun(t, "mcopy", "-i", fat, path("uki.efi"), "::/EFI/BOOT/BOOTX64.EFI")
	diskRun(t, "syslinux", "--install", fat)

	fatData, err := os.ReadFile(fat)
	if err != nil {
		t.Fatal(err)
	}
	mbrCode, err := os.ReadFile("/usr/lib/syslinux/mbr/mbr.bin")
	if err != nil || len(mbrCode) > 440 {
		t.Fatalf("syslinux mbr.bin: %v (%d bytes, want ≤ 440)", err, len(mbrCode))
	}
	const start = 2048 // sectors: the partition begins at 1 MiB
	image := make([]byte, (start*512+len(fatData)+(1<<20)-1)&^((1<<20)-1)+8<<20)
	copy(image, mbrCode)
	entry := image[446:462]
	entry[0] = 0x80                            // active: syslinux's MBR boots this partition
	copy(entry[1:4], []byte{0xfe, 0xff, 0xff}) // CHS unused: LBA only
	entry[4] = 0xef                            // EFI system partition
	copy(entry[5:8], []byte{0xfe, 0xff, 0xff})
	binary.LittleEndian.PutUint32(entry[8:], start)
	binary.LittleEndian.PutUint32(entry[12:], uint32(len(fatData)/512))
	image[510], image[511] = 0x55, 0xaa
	copy(image[start*512:], fatData)
	out := filepath.Join(dir, "os.img")
	diskWrite(t, out, image)
	return out
}

// diskInitramfs is a gzip newc cpio with busybox and an /init that prints the marker.
func diskInitramfs(t *testing.T, token string) []byte {
	t.Helper()
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	init := "#!/bin/busybox sh\n" +
		"/bin/busybox mount -t proc proc /proc\n" +
		"loader=unknown\n" +
		"for a in $(/bin/busybox cat /proc/cmdline); do case $a in rivet.test.loader=*) loader=${a#*=};; esac; done\n" +
		"echo \"" + diskMarker + " token=" + token + " loader=$loader\"\n" +
		"/bin/busybox poweroff -f\n"
	var cpio bytes.Buffer
	w := newcWriter{w: &cpio}
	w.dir("bin")
	w.dir("dev")
	w.dir("proc")
	w.node("dev/console", 0o020600, 5, 1, nil)
	w.node("bin/busybox", 0o100755, 0, 0, busybox)
	w.node("init", 0o100755, 0, 0, []byte(init))
	w.node("TRAILER!!!", 0, 0, 0, nil)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(cpio.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return gz.Bytes()
}

// newcWriter writes the "newc" cpio format the kernel unpacks (initramfs/ has the real
// one, unexported; the test's needs are four entries).
type newcWriter struct {
	w   *bytes.Buffer
	ino int
}

func (c *newcWriter) dir(name string) { c.node(name, 0o040755, 0, 0, nil) }

func (c *newcWriter) node(name string, mode uint32, rdevMajor, rdevMinor int, data []byte) {
	c.ino++
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.w.WriteString(name + "\x00")
	c.pad()
	c.w.Write(data)
	c.pad()
}

func (c *newcWriter) pad() {
	for c.w.Len()%4 != 0 {
		c.w.WriteByte(0)
	}
}

// diskCopy copies a disk image for one VM.
func diskCopy(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	diskWrite(t, to, data)
}

func diskWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func diskRun(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
