package power

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// TestQEMUPower drives a real TCG qemu through its life: power on (twice: idempotent),
// query, reset, a second driver (a later process) finding and stopping it, a boot
// device change that shows in the next start's command line, and no process left.
func TestQEMUPower(t *testing.T) {
	testenv.RequireCommand(t, "qemu-system-x86_64")
	for _, fw := range []string{FirmwareBIOS, FirmwareUEFI} {
		t.Run(fw, func(t *testing.T) {
			if fw == FirmwareUEFI {
				testenv.RequireFile(t, "/usr/share/OVMF/OVMF_CODE_4M.fd")
			}
			testQEMUPower(t, fw)
		})
	}
}

func testQEMUPower(t *testing.T, fw string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 64<<20); err != nil {
		t.Fatal(err)
	}
	cfg := QEMUConfig{Name: "rvt-power-" + fw, Dir: filepath.Join(dir, "vm"), MAC: "52:54:00:7f:00:01",
		Disk: disk, DiskSerial: "RVTPOWER", UUID: "6f1c2a5e-3b1d-4f7a-9c2e-8d4b5a6c7e01", MemoryMiB: 128, Firmware: fw}
	m, err := NewQEMU(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pid := m.PID(); pid != 0 {
			_ = m.Kill(context.Background())
			t.Errorf("qemu %d still ran at the end of the test", pid)
		}
	})

	if st, err := m.Guest(ctx); err != nil || st.Status != "off" {
		t.Fatalf("before power on: status %+v, %v; want off", st, err)
	}
	if err := m.On(ctx); err != nil {
		t.Fatal(err)
	}
	pid := m.PID()
	if pid == 0 {
		t.Fatal("powered on, but no qemu process found")
	}
	st, err := m.Guest(ctx)
	if err != nil || !st.Running || st.Status != "running" {
		t.Fatalf("after power on: status %+v, %v; want running", st, err)
	}
	if err := m.On(ctx); err != nil || m.PID() != pid {
		t.Fatalf("second power on: %v, pid %d (want the same qemu %d)", err, m.PID(), pid)
	}

	// Reset: the firmware starts again, which it tells the serial console.
	banner := map[string]string{FirmwareBIOS: "SeaBIOS (version", FirmwareUEFI: "BdsDxe"}[fw]
	testenv.Eventually(t, time.Minute, "the firmware banner on the serial log", serialShows(m.SerialLog(), banner, 1))
	if err := m.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "the firmware banner again after the reset", serialShows(m.SerialLog(), banner, 2))
	if m.PID() != pid {
		t.Fatalf("cycle of a running machine replaced its process (%d → %d); want a reset", pid, m.PID())
	}

	// A second driver for the same machine, as `rivet lab down` in another process has.
	again, err := NewQEMU(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if again.PID() != pid {
		t.Fatalf("second driver sees pid %d, want %d", again.PID(), pid)
	}
	if err := again.SetBootDevice(ctx, BootDisk); err != nil {
		t.Fatal(err)
	}
	if err := again.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(pid) || m.PID() != 0 {
		t.Fatalf("qemu %d still runs after power off", pid)
	}
	if err := m.Off(ctx); err != nil {
		t.Fatalf("power off of a stopped machine: %v", err)
	}

	// Power on from off: Cycle starts it, with the disk as boot device now.
	if err := m.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	pid = m.PID()
	cmdline, err := os.ReadFile("/proc/" + itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{FirmwareBIOS: "order=c", FirmwareUEFI: "serial=RVTPOWER,bootindex=1"}[fw]
	if !strings.Contains(strings.ReplaceAll(string(cmdline), "\x00", " "), want) {
		t.Fatalf("qemu started after SetBootDevice(disk) lacks %q: %q", want, cmdline)
	}
	if fw == FirmwareUEFI {
		if _, err := os.Stat(filepath.Join(cfg.Dir, "OVMF_VARS.fd")); err != nil {
			t.Fatalf("UEFI machine has no variable store of its own: %v", err)
		}
	}
	if err := m.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(pid) {
		t.Fatalf("qemu %d still runs after power off", pid)
	}
}

// TestQEMUKillIsPowerLoss checks Kill ends a VM without QMP and leaves it restartable.
func TestQEMUKillIsPowerLoss(t *testing.T) {
	testenv.RequireCommand(t, "qemu-system-x86_64")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	m, err := NewQEMU(QEMUConfig{Name: "rvt-kill", Dir: dir, MAC: "52:54:00:7f:00:02", Disk: filepath.Join(dir, "d.raw"), MemoryMiB: 128})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d.raw"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Off(context.Background()) })
	if err := m.On(ctx); err != nil {
		t.Fatal(err)
	}
	pid := m.PID()
	if err := m.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(pid) || m.PID() != 0 {
		t.Fatalf("qemu %d survived Kill", pid)
	}
	if err := m.On(ctx); err != nil {
		t.Fatalf("power on after a power loss: %v", err)
	}
	if st, err := m.Guest(ctx); err != nil || !st.Running {
		t.Fatalf("after power loss and on: %+v, %v", st, err)
	}
	if err := m.Off(ctx); err != nil {
		t.Fatal(err)
	}
}

// serialShows is a check that the serial log at path holds marker at least count times.
func serialShows(path, marker string, count int) func() error {
	return func() error {
		data, _ := os.ReadFile(path)
		if strings.Count(string(data), marker) < count {
			return fmt.Errorf("%q %d times wanted; serial log:\n%s", marker, count, data)
		}
		return nil
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
