package bmcfarm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/internal/testenv"
)

const (
	testUser     = "rivet"
	testPassword = "farm-secret-7"
)

// childBMCs, when set in the environment, makes the test binary a farm process (Main)
// instead of running the tests: the other end of StartProcess.
const childBMCs = "RIVET_BMCFARM_TEST_CHILD"

func TestMain(m *testing.M) {
	if n := os.Getenv(childBMCs); n != "" {
		if err := Main(context.Background(), []string{"--bmcs", n, "--user", testUser}, os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "bmcfarm:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func startFarm(t *testing.T, n int) *Farm {
	t.Helper()
	f, err := Start(Config{BMCs: n, User: testUser, Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}

// ipmitool runs Debian's ipmitool against BMC port the way operators do (lanplus, -C 3):
// the reference the farm must satisfy.
func ipmitool(t *testing.T, port int, args ...string) string {
	t.Helper()
	bin := testenv.RequireCommand(t, "ipmitool")
	argv := append([]string{"-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", strconv.Itoa(port),
		"-U", testUser, "-E"}, args...)
	cmd := exec.Command(bin, argv...)
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+testPassword) // -E: not on the command line
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ipmitool %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func ipmitoolPower(t *testing.T, port int) power.State {
	t.Helper()
	out := ipmitool(t, port, "chassis", "power", "status")
	switch out {
	case "Chassis Power is on":
		return power.StateOn
	case "Chassis Power is off":
		return power.StateOff
	}
	t.Fatalf("ipmitool chassis power status said %q", out)
	return ""
}

func driver(t *testing.T, port int) *power.IPMI {
	t.Helper()
	d, err := power.NewIPMI(power.IPMIConfig{Host: "127.0.0.1", Port: port, User: testUser,
		Password: testPassword, CipherSuite: 3, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestIPMIToolAndRivetAgree switches a BMC on, off and through a cycle, alternately with
// ipmitool and Rivet's driver, and after each step checks that ipmitool, the driver and
// the chassis itself report the same power.
func TestIPMIToolAndRivetAgree(t *testing.T) {
	f := startFarm(t, 2)
	port, ch := f.Ports()[1], f.Chassis(1)
	d := driver(t, port)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	agree := func(step string, want power.State) {
		t.Helper()
		got, err := d.Status(ctx)
		if err != nil {
			t.Fatalf("%s: driver status: %v", step, err)
		}
		tool := ipmitoolPower(t, port)
		chassis := power.StateOff
		if ch.IsOn() {
			chassis = power.StateOn
		}
		if got != want || tool != want || chassis != want {
			t.Fatalf("%s: driver says %s, ipmitool %s, the chassis %s; want %s", step, got, tool, chassis, want)
		}
	}

	agree("at start", power.StateOff)
	if err := d.On(ctx); err != nil {
		t.Fatal(err)
	}
	agree("driver on", power.StateOn)
	ipmitool(t, port, "chassis", "power", "off")
	agree("ipmitool off", power.StateOff)
	ipmitool(t, port, "chassis", "power", "on")
	agree("ipmitool on", power.StateOn)
	if err := d.Off(ctx); err != nil {
		t.Fatal(err)
	}
	agree("driver off", power.StateOff)

	// A cycle of a machine that is off powers it on (the driver's rule); a cycle of a
	// running one resets it and it stays on.
	if err := d.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	agree("driver cycle while off", power.StateOn)
	if err := d.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	agree("driver cycle while on", power.StateOn)
	ipmitool(t, port, "chassis", "power", "cycle")
	agree("ipmitool cycle", power.StateOn)
	if got := ch.Cycles(); got != 2 {
		t.Errorf("the chassis counted %d power cycles, want 2 (the driver's and ipmitool's while on)", got)
	}
	if f.Chassis(0).IsOn() || f.Chassis(0).Cycles() != 0 {
		t.Error("BMC 0 changed although only BMC 1 was commanded")
	}
}

func TestBootDeviceReachesTheChassis(t *testing.T) {
	f := startFarm(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := driver(t, f.Ports()[0]).SetBootDevice(ctx, power.BootPXE); err != nil {
		t.Fatal(err)
	}
	flags := f.Chassis(0).BootFlags()
	if flags == nil || !flags.BootFlagsValid || flags.Persist || flags.BootDeviceSelector != types.BootDeviceSelectorForcePXE {
		t.Fatalf("boot flags after SetBootDevice(pxe): %+v; want valid, one-time, PXE", flags)
	}
	// ipmitool reads back what the driver set.
	if out := ipmitool(t, f.Ports()[0], "chassis", "bootparam", "get", "5"); !strings.Contains(out, "Force PXE") {
		t.Errorf("ipmitool chassis bootparam get 5:\n%s\nwant Force PXE", out)
	}
}

func TestWrongPasswordIsRefused(t *testing.T) {
	f := startFarm(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := power.NewIPMI(power.IPMIConfig{Host: "127.0.0.1", Port: f.Ports()[0], User: testUser,
		Password: "not-the-password", CipherSuite: 3, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = d.On(ctx)
	if err == nil || !errors.Is(err, power.ErrBMCAuth) {
		t.Fatalf("On with a wrong password: %v; want a refused login", err)
	}
	if f.Chassis(0).IsOn() {
		t.Fatal("a wrong password switched the power on")
	}
}

// TestProcess runs the farm as a child process (this test binary, as Main) and drives
// it through the protocol: ports, IPMI to one of them, states and off.
func TestProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childBMCs+"=3", PasswordEnv+"="+testPassword)
	p, err := StartProcess(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = p.Close()
		}
	})
	if len(p.Ports()) != 3 {
		t.Fatalf("ports %v, want 3", p.Ports())
	}
	ipmitool(t, p.Ports()[2], "chassis", "power", "on")
	if err := driver(t, p.Ports()[0]).On(ctx); err != nil {
		t.Fatal(err)
	}
	states, err := p.PowerStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(states) != "[true false true]" {
		t.Fatalf("states %v after powering BMCs 0 and 2 on", states)
	}
	if err := p.PowerOffAll(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ipmitoolPower(t, p.Ports()[2]); got != power.StateOff {
		t.Fatalf("BMC 2 is %s after off", got)
	}
	if _, err := p.ask(ctx, "explode"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("an unknown command: %v; want it refused", err)
	}
	closed = true
	if err := p.Close(); err != nil {
		t.Fatal(err) // Serve returns when its stdin closes: the farm ends on its own
	}
}

func TestConfigChecks(t *testing.T) {
	for _, cfg := range []Config{
		{BMCs: 0, User: "u"},
		{BMCs: 1},
		{BMCs: 1, User: strings.Repeat("u", 17)},
		{BMCs: 1, User: "u", Password: strings.Repeat("p", 21)},
	} {
		if f, err := Start(cfg); err == nil {
			f.Close()
			t.Errorf("Start(%+v) succeeded, want refused", cfg)
		} else if cfg.Password != "" && strings.Contains(err.Error(), cfg.Password) {
			t.Errorf("the error names the password: %v", err)
		}
	}
}
