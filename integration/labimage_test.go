package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// GPT partition types of the lab image's contract (packaging/labimage/README.md).
const (
	labImageESPType  = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	labImageRootType = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" // root-x86-64: systemd-repart grows it
	labImageMarker   = "RIVET-LABIMAGE-MARKER"
)

// TestLabImageBootsBIOSAndUEFI builds the lab OS image with `make lab-image`, checks its
// disk layout contract, and boots a copy of it under qemu TCG with SeaBIOS and with OVMF.
// Each copy is 1 GiB larger than the image (like a real disk) and gets one extra unit,
// written with debugfs, that prints what the test asserts once multi-user is reached:
// dockerd active, rivet-agent enabled but skipped by its ConditionPathExists (no
// /etc/rivet/agent.yaml yet), root mounted by label and grown to the disk, and a DHCP
// address on the en* NIC (qemu user networking, restricted: nothing leaves the host).
func TestLabImageBootsBIOSAndUEFI(t *testing.T) {
	testenv.Long(t)
	testenv.RequireRoot(t)
	for _, c := range []string{"make", "debootstrap", "qemu-system-x86_64", "sfdisk", "debugfs", "zstd", "mcopy", "syslinux", "objcopy", "mke2fs"} {
		testenv.RequireCommand(t, c)
	}
	for _, f := range []string{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd",
		"/usr/lib/syslinux/mbr/gptmbr.bin", "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"} {
		testenv.RequireFile(t, f)
	}

	out := filepath.Join(repoRoot(), "build", "labimage")
	start := time.Now()
	build := exec.Command("make", "lab-image")
	build.Dir = repoRoot()
	logs, err := build.CombinedOutput()
	t.Logf("make lab-image (%.0f s):\n%s", time.Since(start).Seconds(), labImageStages(logs))
	if err != nil {
		t.Fatalf("make lab-image: %v\n%s", err, logs)
	}

	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	labImageUnpack(t, filepath.Join(out, "rivet-lab.raw.zst"), base)
	want, err := os.ReadFile(filepath.Join(out, "rivet-lab.raw.zst.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if got := labImageSHA256(t, base); got != strings.TrimSpace(string(want)) {
		t.Fatalf("sha256 of the uncompressed image is %s, rivet-lab.raw.zst.sha256 says %s", got, want)
	}
	info, _ := os.Stat(base)
	t.Logf("image: %d MiB raw", info.Size()>>20)
	if info.Size() > 2<<30 {
		t.Errorf("image is %d MiB raw, over the 2 GiB budget", info.Size()>>20)
	}
	rootOffset, rootBytes := labImageCheckLayout(t, base)

	// BIOS boots it from virtio-blk (vda), UEFI from virtio-scsi (sda): the image must not
	// care which device name its disk gets.
	for fw, device := range map[string]string{"bios": "/dev/vda2", "uefi": "/dev/sda2"} {
		fw, device := fw, device
		t.Run(fw, func(t *testing.T) {
			disk := filepath.Join(dir, fw+".raw")
			labImageCopy(t, base, disk, info.Size()+1<<30)
			labImageAddMarkerUnit(t, disk, rootOffset)
			took, line := labImageBoot(t, dir, fw, disk)
			t.Logf("%s: booted to multi-user with the marker in %.1f s: %s", fw, took.Seconds(), line)
			fields := labImageFields(line)
			for key, want := range map[string]string{
				"multi_user": "active", "failed": "none",
				"docker": "active", "agent_enabled": "enabled", "agent_condition": "no",
				"root_arg": "LABEL=" + shared.DefaultRootLabel, "root_source": device, "root_fstype": "ext4",
			} {
				if fields[key] != want {
					t.Errorf("%s: %s=%q, want %q", fw, key, fields[key], want)
				}
			}
			if mib, _ := strconv.ParseInt(fields["root_mib"], 10, 64); mib*(1<<20) <= rootBytes {
				t.Errorf("%s: root filesystem is %s MiB, not grown past the image's %d MiB (systemd-repart + growfs)", fw, fields["root_mib"], rootBytes>>20)
			}
			if fields["agent_version"] == "" {
				t.Errorf("%s: rivet-agent version printed nothing", fw)
			}
			if !strings.HasPrefix(fields["ip"], "10.0.2.") {
				t.Errorf("%s: no DHCP address on the en* NIC: ip=%q", fw, fields["ip"])
			}
			if t.Failed() {
				t.Logf("%s: console tail:\n%s", fw, labImageTail(filepath.Join(dir, fw+"-serial.log")))
			}
		})
	}
}

// labImageStages keeps the recipe's stage timings from the make output.
func labImageStages(logs []byte) string {
	var b strings.Builder
	for _, l := range strings.Split(string(logs), "\n") {
		if strings.Contains(l, "labimage:") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func labImageUnpack(t *testing.T, zst, raw string) {
	t.Helper()
	if msg, err := exec.Command("zstd", "-dq", "-f", zst, "-o", raw).CombinedOutput(); err != nil {
		t.Fatalf("zstd -d %s: %v\n%s", zst, err, msg)
	}
}

func labImageSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// labImageCheckLayout checks the contract: GPT, an ESP that BIOS (gptmbr.bin +
// LegacyBIOSBootable) and UEFI (\EFI\BOOT\BOOTX64.EFI) boot, and an ext4 root partition
// labelled rivet-root holding no agent config or state. It returns the root partition's
// offset and size in bytes.
func labImageCheckLayout(t *testing.T, raw string) (offset, size int64) {
	t.Helper()
	msg, err := exec.Command("sfdisk", "--json", raw).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var table struct {
		PartitionTable struct {
			Label      string `json:"label"`
			Partitions []struct {
				Start, Size int64
				Type, Name  string
				Attrs       string `json:"attrs"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(msg, &table); err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, msg)
	}
	pt := table.PartitionTable
	if pt.Label != "gpt" || len(pt.Partitions) != 2 {
		t.Fatalf("want a GPT with 2 partitions, got %s", msg)
	}
	esp, root := pt.Partitions[0], pt.Partitions[1]
	if esp.Type != labImageESPType || !strings.Contains(esp.Attrs, "LegacyBIOSBootable") {
		t.Errorf("partition 1 is not an ESP marked LegacyBIOSBootable: %+v", esp)
	}
	if root.Type != labImageRootType {
		t.Errorf("partition 2 has type %s, want root-x86-64 %s", root.Type, labImageRootType)
	}
	mbr := make([]byte, 440)
	gptmbr, err := os.ReadFile("/usr/lib/syslinux/mbr/gptmbr.bin")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(mbr, 0); err != nil || !bytes.Equal(mbr, gptmbr[:440]) {
		t.Errorf("the protective MBR does not carry syslinux's gptmbr.bin (BIOS boot)")
	}
	espImg := fmt.Sprintf("%s@@%d", raw, esp.Start*512)
	dirList, err := exec.Command("mdir", "-b", "-i", espImg, "::/EFI/BOOT").CombinedOutput()
	if err != nil || !strings.Contains(strings.ToUpper(string(dirList)), "BOOTX64.EFI") {
		t.Errorf("no \\EFI\\BOOT\\BOOTX64.EFI on the ESP: %v\n%s", err, dirList)
	}

	offset, size = root.Start*512, root.Size*512
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, offset+1024); err != nil {
		t.Fatal(err)
	}
	if magic := binary.LittleEndian.Uint16(sb[56:]); magic != 0xEF53 {
		t.Fatalf("partition 2 holds no ext2/3/4 file system (magic %#x)", magic)
	}
	if label := string(bytes.TrimRight(sb[120:136], "\x00")); label != shared.DefaultRootLabel {
		t.Errorf("root file system label %q, want %q", label, shared.DefaultRootLabel)
	}
	fstab := labImageDebugfs(t, raw, offset, false, "cat /etc/fstab")
	if !regexp.MustCompile(`(?m)^LABEL=rivet-root\s+/\s+ext4`).MatchString(fstab) {
		t.Errorf("/etc/fstab does not mount LABEL=rivet-root on /:\n%s", fstab)
	}
	for _, p := range []string{"/etc/rivet/agent.yaml", "/var/lib/rivet"} {
		if out := labImageDebugfs(t, raw, offset, false, "stat "+p); !strings.Contains(out, "File not found") {
			t.Errorf("the image carries %s; it must be left to the RAM agent", p)
		}
	}
	if out := labImageDebugfs(t, raw, offset, false, "stat /etc/systemd/system/multi-user.target.wants/rivet-agent.service"); strings.Contains(out, "File not found") {
		t.Errorf("rivet-agent.service is not enabled in the image")
	}
	return offset, size
}

// labImageDebugfs runs debugfs commands on the ext4 file system at offset inside raw.
func labImageDebugfs(t *testing.T, raw string, offset int64, write bool, cmds ...string) string {
	t.Helper()
	args := []string{}
	if write {
		args = append(args, "-w")
	}
	script := filepath.Join(t.TempDir(), "debugfs.cmds")
	if err := os.WriteFile(script, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args = append(args, "-f", script, fmt.Sprintf("%s?offset=%d", raw, offset))
	out, err := exec.Command("debugfs", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// labImageCopy makes a sparse copy of the image, grown to size like a larger disk.
func labImageCopy(t *testing.T, from, to string, size int64) {
	t.Helper()
	if msg, err := exec.Command("cp", "--sparse=always", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, msg)
	}
	if err := os.Truncate(to, size); err != nil {
		t.Fatal(err)
	}
}

// labImageMarkerScript prints the facts the test asserts, as key=value on one line, to
// the console (ttyS0, the last console= on the kernel line).
const labImageMarkerScript = `#!/bin/sh
root=$(findmnt -n -o SOURCE,FSTYPE /)
# networkd's DHCP lease is not ordered before multi-user: give it up to 90 s.
for i in $(seq 90); do
  ip=$(ip -4 -o addr show scope global | awk '$2 ~ /^en/ {split($4, a, "/"); print a[1]; exit}')
  [ -n "$ip" ] && break
  sleep 1
done
failed=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | paste -sd, -)
echo "` + labImageMarker + ` multi_user=$(systemctl is-active multi-user.target)" \
  "failed=${failed:-none} docker=$(systemctl is-active docker)" \
  "agent_version=$(rivet-agent version | awk '{print $NF; exit}')" \
  "agent_enabled=$(systemctl is-enabled rivet-agent)" \
  "agent_condition=$(systemctl show -P ConditionResult rivet-agent)" \
  "root_arg=$(sed -n 's/.*root=\([^ ]*\).*/\1/p' /proc/cmdline)" \
  "root_source=${root%% *} root_fstype=${root##* }" \
  "root_mib=$(df -B1M --output=size / | tail -n 1 | tr -d ' ')" \
  "ip=${ip:-none} uptime=$(cut -d' ' -f1 /proc/uptime)"
`

// Ordered after multi-user.target (which then does not wait for it): it runs once the
// boot has reached multi-user. systemd prints no "Reached target" line on a serial
// console that a getty holds, so the marker reports it.
const labImageMarkerUnit = `[Unit]
Description=Rivet lab image test marker
After=multi-user.target docker.service rivet-agent.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/rivet-test-marker
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
`

// labImageAddMarkerUnit writes the marker unit into the copy's root file system and
// enables it, without mounting anything.
func labImageAddMarkerUnit(t *testing.T, disk string, offset int64) {
	t.Helper()
	dir := t.TempDir()
	script, unit := filepath.Join(dir, "rivet-test-marker"), filepath.Join(dir, "rivet-test-marker.service")
	if err := os.WriteFile(script, []byte(labImageMarkerScript), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unit, []byte(labImageMarkerUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	labImageDebugfs(t, disk, offset, true,
		"cd /usr/local/sbin", "write "+script+" rivet-test-marker",
		"cd /etc/systemd/system", "write "+unit+" rivet-test-marker.service",
		"cd /etc/systemd/system/multi-user.target.wants",
		"symlink rivet-test-marker.service /etc/systemd/system/rivet-test-marker.service")
	if out := labImageDebugfs(t, disk, offset, false, "cat /usr/local/sbin/rivet-test-marker"); !strings.Contains(out, labImageMarker) {
		t.Fatalf("the marker script was not written:\n%s", out)
	}
}

var labImageBootFailures = regexp.MustCompile(`Kernel panic|emergency mode|Give root password|Failed to mount|ALERT! |Boot failed|No bootable device`)

// labImageBoot boots disk under qemu TCG with firmware "bios" or "uefi" and waits for
// the marker line on the serial console (printed once multi-user is reached). It returns the time from qemu's
// start to the marker, and the marker line.
func labImageBoot(t *testing.T, dir, firmware, disk string) (time.Duration, string) {
	t.Helper()
	serial := filepath.Join(dir, firmware+"-serial.log")
	args := []string{"-accel", "tcg", "-cpu", power.LabCPU, "-m", "1024", "-smp", "1", "-display", "none", "-vga", "none",
		"-monitor", "none", "-no-reboot", "-serial", "file:" + serial,
		"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,romfile=",
		"-device", "virtio-rng-pci"}
	switch firmware {
	case "bios":
		args = append(args, "-machine", "pc", "-drive", "file="+disk+",if=virtio,format=raw")
	case "uefi":
		vars := filepath.Join(dir, "uefi-vars.fd")
		data, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS_4M.fd")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vars, data, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-machine", "q35",
			"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
			"-drive", "if=pflash,format=raw,file="+vars,
			"-device", "virtio-scsi-pci,id=scsi0",
			"-drive", "if=none,id=d0,format=raw,file="+disk, "-device", "scsi-hd,drive=d0,bus=scsi0.0,bootindex=1")
	}
	// Generous: TCG on 2 cores shared with other qemu tests; a healthy boot takes ~1 min.
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	// qemu dies with the test binary, even when it is killed before its cleanups run.
	waited, err := testenv.StartTied(cmd, syscall.SIGKILL)
	if err != nil {
		t.Fatalf("qemu: %v", err)
	}
	exited := make(chan error, 1) // the wait below puts the result back for the cleanup
	go func() { exited <- <-waited }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	var line string
	testenv.Eventually(t, 12*time.Minute, firmware+" VM to print the marker", func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s: qemu exited before the marker (%v): %s\nconsole tail:\n%s", firmware, err, stderr.String(), labImageTail(serial))
		default:
		}
		console := labImageConsole(serial)
		if bad := labImageBootFailures.FindString(console); bad != "" {
			t.Fatalf("%s: boot failed (%q); console tail:\n%s", firmware, bad, labImageTail(serial))
		}
		i := strings.Index(console, labImageMarker+" ")
		if i < 0 {
			return fmt.Errorf("no marker; console tail:\n%s", labImageTail(serial))
		}
		line, _, _ = strings.Cut(console[i:], "\n")
		return nil
	})
	return time.Since(start), strings.TrimSpace(line)
}

var labImageANSI = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// labImageConsole is the serial log with terminal colour codes removed.
func labImageConsole(path string) string {
	data, _ := os.ReadFile(path)
	return labImageANSI.ReplaceAllString(strings.ReplaceAll(string(data), "\r", ""), "")
}

func labImageTail(path string) string {
	c := labImageConsole(path)
	if len(c) > 4000 {
		c = c[len(c)-4000:]
	}
	return c
}

// labImageFields parses the marker's key=value words.
func labImageFields(line string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(line) {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		}
	}
	return m
}
