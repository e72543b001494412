package redfishbmc

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// TestQEMUBehindTheBMC is the lab's arrangement: a qemu VM (power.QEMU, driven over QMP
// inside the BMC) behind the Redfish service, and Rivet's Redfish driver in front.
func TestQEMUBehindTheBMC(t *testing.T) {
	testenv.RequireCommand(t, "qemu-system-x86_64")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	vm, err := power.NewQEMU(power.QEMUConfig{Name: "rvt-redfish", Dir: filepath.Join(dir, "vm"),
		MAC: "52:54:00:7f:00:15", Disk: disk, MemoryMiB: 128})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pid := vm.PID(); pid != 0 {
			_ = vm.Kill(context.Background())
			t.Errorf("qemu %d still ran at the end of the test", pid)
		}
	})
	b := start(t, DriverChassis{Driver: vm})
	rf, err := power.NewRedfish(power.RedfishConfig{Endpoint: b.URL(), User: testUser, Password: testPassword,
		TLSSHA256: b.Fingerprint(), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	if err := rf.SetBootDevice(ctx, power.BootDisk); err != nil {
		t.Fatal(err)
	}
	if dev := vm.BootDevice(); dev != power.BootDisk {
		t.Fatalf("the VM boots from %s after SetBootDevice(disk) through the BMC", dev)
	}
	if err := rf.On(ctx); err != nil {
		t.Fatal(err)
	}
	pid := vm.PID()
	if pid == 0 {
		t.Fatal("powered on through the BMC, but no qemu runs")
	}
	if st, err := vm.Guest(ctx); err != nil || !st.Running {
		t.Fatalf("the guest after power on: %+v, %v", st, err)
	}
	if err := rf.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if vm.PID() != pid {
		t.Fatalf("a reset through the BMC replaced qemu %d by %d", pid, vm.PID())
	}
	if err := rf.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if vm.PID() != 0 {
		t.Fatal("qemu still runs after power off through the BMC")
	}
	if st, err := rf.Status(ctx); err != nil || st != power.StateOff {
		t.Fatalf("Status after Off: %s, %v", st, err)
	}
}
