package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/internal/ipmisim"
	"github.com/rivetmetal/rivet/internal/ipmisim/simconf"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// TestChassisBehindIPMISim drives a lab VM (a real qemu) through OpenIPMI's ipmi_sim
// whose chassis_control program is `rivet lab bmc-chassis`, with Debian's ipmitool and
// with Rivet's own IPMI driver.
func TestChassisBehindIPMISim(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "rivet")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./coordinator/cmd/rivet")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building rivet: %v\n%s", err, out)
	}

	// A lab of one VM as Up records it, with only its namespace, bridge and tap: no
	// coordinator, so the VM's PXE boot finds nobody and it stays in its firmware.
	cfg := Config{Name: fmt.Sprintf("rvc%d", os.Getpid()%1000000), Dir: t.TempDir(), MemoryMiB: 128}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	labNetwork(ctx, t, &cfg)
	st := &state{Name: cfg.Name, Subnet: cfg.Subnet, Firmwares: map[int]string{1: power.FirmwareBIOS}}
	if err := st.write(cfg.stateFile()); err != nil {
		t.Fatal(err)
	}
	if err := cfg.ensureDisk(cfg.machine(1, power.FirmwareBIOS).Disk); err != nil {
		t.Fatal(err)
	}
	vm, err := Power(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = vm.Kill(context.Background()) })

	port, err := ipmisim.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	bmcDir := t.TempDir()
	o := simconf.Options{Addr: "127.0.0.1", Port: port, User: "admin", Password: "lab-secret",
		Chassis: fmt.Sprintf("%s lab bmc-chassis --dir %s --vm 1", bin, cfg.Dir)}
	if err := simconf.Write(bmcDir, o); err != nil {
		t.Fatal(err)
	}
	sim, err := ipmisim.Run(ctx, bmcDir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)

	wantPower := func(want string) {
		t.Helper()
		if got, err := sim.Power(ctx); err != nil || got != want {
			t.Fatalf("ipmitool power status: %q, %v; want %s\nipmi_sim: %s", got, err, want, sim.Output())
		}
	}
	ipmitool := func(args ...string) string {
		t.Helper()
		start := time.Now()
		out, err := sim.IPMITool(ctx, args...)
		if err != nil {
			t.Fatalf("%v\nipmi_sim: %s", err, sim.Output())
		}
		t.Logf("ipmitool %s: %s (%s)", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		return out
	}
	wantOrder := func(order string) {
		t.Helper()
		err := testenv.Poll(ctx, 10*time.Second, "qemu to run with boot order "+order, func() error {
			pid := vm.PID()
			if pid == 0 {
				return fmt.Errorf("no qemu runs")
			}
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil {
				return err
			}
			if !bytes.Contains(cmdline, []byte("order="+order+"\x00")) {
				return fmt.Errorf("qemu %d runs without order=%s", pid, order)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	wantPower("off")
	ipmitool("chassis", "power", "on")
	wantPower("on")
	wantOrder("nc")
	first := vm.PID()

	ipmitool("chassis", "bootdev", "disk")
	ipmitool("chassis", "power", "cycle")
	wantOrder("c")
	if vm.PID() == first {
		t.Fatal("power cycle kept the same qemu: the new boot device cannot have taken effect")
	}
	ipmitool("chassis", "bootdev", "pxe")
	ipmitool("chassis", "power", "reset")
	wantOrder("nc")
	ipmitool("chassis", "bootdev", "disk")
	if out := ipmitool("chassis", "bootparam", "get", "5"); !strings.Contains(out, "Hard-Drive") {
		t.Errorf("boot parameter 5 after bootdev disk: %s", out)
	}
	ipmitool("chassis", "power", "off")
	wantPower("off")
	if pid := vm.PID(); pid != 0 {
		t.Fatalf("qemu %d still runs after power off", pid)
	}

	// Rivet's own driver (go-ipmi) through the same chassis program.
	drv, err := power.NewIPMI(power.IPMIConfig{Host: "127.0.0.1", Port: port, User: o.User, Password: o.Password,
		CipherSuite: 3, SoftOffTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.SetBootDevice(ctx, power.BootPXE); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := drv.On(ctx); err != nil {
		t.Fatalf("IPMI driver On: %v\nipmi_sim: %s", err, sim.Output())
	}
	t.Logf("IPMI driver On: %s", time.Since(start).Round(time.Millisecond))
	wantOrder("nc")
	if s, err := drv.Status(ctx); err != nil || s != power.StateOn {
		t.Fatalf("IPMI driver Status: %v, %v", s, err)
	}
	// The firmware ignores the ACPI button, so Off's soft stage gives way to the cut.
	if err := drv.Off(ctx); err != nil {
		t.Fatalf("IPMI driver Off: %v\nipmi_sim: %s", err, sim.Output())
	}
	if pid := vm.PID(); pid != 0 {
		t.Fatalf("qemu %d still runs after the driver's Off", pid)
	}
	if strings.Contains(sim.Output(), o.Password) {
		t.Error("ipmi_sim's output holds the password")
	}
}

// labNetwork makes the lab's namespace with its bridge and VM 1's tap, removed at the end.
func labNetwork(ctx context.Context, t *testing.T, c *Config) {
	t.Helper()
	t.Cleanup(func() { _ = ip(context.Background(), "netns", "del", c.netns()) })
	for _, args := range [][]string{{"netns", "add", c.netns()},
		{"-n", c.netns(), "link", "add", c.bridge(), "type", "bridge"},
		{"-n", c.netns(), "link", "set", c.bridge(), "up"}} {
		if err := ip(ctx, args...); err != nil {
			t.Fatalf("%v (the test needs root for a network namespace)", err)
		}
	}
	if err := c.tapUp(ctx, 1); err != nil {
		t.Fatal(err)
	}
}
