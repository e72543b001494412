package power

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

const (
	simUser     = "rivetadm"
	simPassword = "Sim-Pass-4711"
)

func TestIPMIConfigRedactsThePassword(t *testing.T) {
	cfg := IPMIConfig{Host: "10.0.0.9", Port: 623, User: "admin", Password: "hunter2-secret"}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("bmc", "cfg", cfg)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("bmc", "cfg", cfg)
	for name, s := range map[string]string{
		"String": cfg.String(), "%v": fmt.Sprintf("%v", cfg), "%+v": fmt.Sprintf("%+v", cfg),
		"%#v": fmt.Sprintf("%#v", cfg), "slog": logs.String(),
	} {
		if !strings.Contains(s, "10.0.0.9:623") {
			t.Errorf("%s does not name the BMC (so the password check below proves nothing): %s", name, s)
		}
		if strings.Contains(s, cfg.Password) {
			t.Errorf("%s shows the password: %s", name, s)
		}
	}
}

// ipmiSim is OpenIPMI's BMC simulator on a loopback UDP port, with a chassis control
// program that keeps the power and boot device in files.
type ipmiSim struct {
	port int
	dir  string
}

func startIPMISim(t *testing.T) *ipmiSim {
	t.Helper()
	testenv.RequireRoot(t)
	bin := testenv.RequireCommand(t, "ipmi_sim")
	testenv.RequireCommand(t, "ipmitool")

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	chassisDir := filepath.Join(dir, "chassis")
	for _, d := range []string{state, chassisDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// ipmi_sim runs `PROGRAM get power boot` and `PROGRAM set power 1` and so on. A soft-off
	// (`set shutdown 1`) is logged, and obeyed (power 0) while the file acpi exists: an OS
	// that handles the ACPI power button.
	script := `#!/bin/sh
dir=$1; op=$2; shift 2
case $op in
get)
  for p in "$@"; do
    case $p in
      power) v=$(cat "$dir/power" 2>/dev/null || echo 0) ;;
      boot) v=$(cat "$dir/boot" 2>/dev/null || echo default) ;;
      *) echo "invalid parameter: $p"; exit 1 ;;
    esac
    echo "$p:$v"
  done ;;
set)
  while [ $# -ge 2 ]; do
    case $1 in
      power|boot) echo "$2" >"$dir/$1" ;;
      shutdown) echo "shutdown $2" >>"$dir/log"; [ -e "$dir/acpi" ] && echo 0 >"$dir/power" ;;
      reset) ;;
      *) echo "invalid parameter: $1"; exit 1 ;;
    esac
    shift 2
  done ;;
*) exit 1 ;;
esac
`
	control := filepath.Join(dir, "chassis-control")
	if err := os.WriteFile(control, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	port := freeUDPPort(t)
	lanConf := fmt.Sprintf(`name "rivet-test"
set_working_mc 0x20
startlan 1
  addr 127.0.0.1 %d
  priv_limit admin
  allowed_auths_callback none md2 md5 straight
  allowed_auths_user none md2 md5 straight
  allowed_auths_operator none md2 md5 straight
  allowed_auths_admin none md2 md5 straight
  guid a123456789abcdefa123456789abcdef
endlan
chassis_control "%s %s"
user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, control, chassisDir, simUser, simPassword)
	emu := "mc_setbmc 0x20\n" +
		"mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n" +
		"sel_enable 0x20 1000 0x0a\n" +
		"mc_enable 0x20\n"
	if err := os.WriteFile(filepath.Join(dir, "lan.conf"), []byte(lanConf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sim.emu"), []byte(emu), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", state, "-n")
	var out testenv.LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	exited, err := testenv.StartTied(cmd, syscall.SIGKILL)
	if err != nil {
		t.Fatalf("start ipmi_sim: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("ipmi_sim output:\n%s", out.String())
		}
	})
	sim := &ipmiSim{port: port, dir: dir}
	testenv.Eventually(t, 10*time.Second, "ipmi_sim to answer ipmitool", func() error {
		select {
		case err := <-exited:
			t.Fatalf("ipmi_sim exited: %v\n%s", err, out.String())
		default:
		}
		_, err := sim.ipmitool(simPassword, "chassis", "power", "status")
		return err
	})
	return sim
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// ipmitool runs Debian's ipmitool against the simulator: the independent check.
func (s *ipmiSim) ipmitool(password string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	base := []string{"-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", strconv.Itoa(s.port),
		"-U", simUser, "-P", password, "-R", "2", "-N", "1"}
	out, err := exec.CommandContext(ctx, "ipmitool", append(base, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// powerPerIPMITool is what ipmitool says of the power: "on" or "off".
func (s *ipmiSim) powerPerIPMITool(t *testing.T) string {
	t.Helper()
	out, err := s.ipmitool(simPassword, "chassis", "power", "status")
	if err != nil {
		t.Fatal(err)
	}
	switch strings.TrimSpace(out) {
	case "Chassis Power is on":
		return "on"
	case "Chassis Power is off":
		return "off"
	}
	t.Fatalf("ipmitool chassis power status: unexpected answer %q", out)
	return ""
}

func (s *ipmiSim) driver(t *testing.T, password string, logs *testenv.LogBuffer) *IPMI {
	t.Helper()
	d, err := NewIPMI(IPMIConfig{
		Host: "127.0.0.1", Port: s.port, User: simUser, Password: password,
		Timeout: 2 * time.Second, Attempts: 2, CipherSuite: 3, PowerWait: 10 * time.Second, SoftOffTimeout: time.Second,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkPower asks Rivet's driver and ipmitool and wants both to say want.
func checkPower(t *testing.T, sim *ipmiSim, d *IPMI, want string) {
	t.Helper()
	st, err := d.Status(t.Context())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if got := string(st); got != want {
		t.Fatalf("Rivet's driver says power %s, want %s", got, want)
	}
	if got := sim.powerPerIPMITool(t); got != want {
		t.Fatalf("ipmitool says power %s, want %s (Rivet's driver says %s)", got, want, st)
	}
	t.Logf("power %s per Rivet's driver and per ipmitool", want)
}

// switchPower switches the power to want twice (the second time changes nothing) and
// checks it after each.
func switchPower(t *testing.T, sim *ipmiSim, d *IPMI, want string) {
	t.Helper()
	action := d.Off
	if want == "on" {
		action = d.On
	}
	for _, round := range []string{"first", "second (idempotent)"} {
		if err := action(t.Context()); err != nil {
			t.Fatalf("power %s, %s time: %v", want, round, err)
		}
		checkPower(t, sim, d, want)
	}
}

func TestIPMIDriverAgainstIPMISim(t *testing.T) {
	sim := startIPMISim(t)
	var logs testenv.LogBuffer
	d := sim.driver(t, simPassword, &logs)
	ctx := t.Context()

	checkPower(t, sim, d, "off")
	switchPower(t, sim, d, "on")

	if err := d.SetBootDevice(ctx, BootPXE); err != nil {
		t.Fatalf("SetBootDevice(pxe): %v", err)
	}
	out, err := sim.ipmitool(simPassword, "chassis", "bootparam", "get", "5")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Boot Device Selector : Force PXE") {
		t.Fatalf("ipmitool chassis bootparam get 5 does not show PXE:\n%s", out)
	}
	t.Logf("boot device PXE per ipmitool")
	if err := d.SetBootDevice(ctx, BootDisk); err != nil {
		t.Fatalf("SetBootDevice(disk): %v", err)
	}
	if out, err = sim.ipmitool(simPassword, "chassis", "bootparam", "get", "5"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Boot Device Selector : Force Boot from default Hard-Drive") {
		t.Fatalf("ipmitool chassis bootparam get 5 does not show the disk:\n%s", out)
	}
	t.Logf("boot device disk per ipmitool")

	if err := d.Cycle(ctx); err != nil {
		t.Fatalf("Cycle: %v", err)
	}
	// ipmi_sim powers down at once and up again a second later.
	testenv.Eventually(t, 20*time.Second, "power on again after the cycle", func() error {
		st, err := d.Status(ctx)
		if err != nil {
			return err
		}
		if st != StateOn {
			return testenv.ErrNotYet
		}
		return nil
	})
	checkPower(t, sim, d, "on")
	// Off is soft, then hard: this OS ignores the power button, so the power is cut
	// after SoftOffTimeout; one that obeys it is off without the cut.
	taken := logs.Take() // what was logged so far, for the password check at the end
	switchPower(t, sim, d, "off")
	got := logs.Take()
	taken += got
	if !strings.Contains(got, "still on after the soft-off; cutting the power") {
		t.Fatalf("Off of an OS that ignores the soft-off did not log the hard cut: %s", got)
	}
	switchPower(t, sim, d, "on")
	if err := os.WriteFile(filepath.Join(sim.dir, "chassis", "acpi"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	taken += logs.Take()
	switchPower(t, sim, d, "off")
	got = logs.Take()
	taken += got
	if !strings.Contains(got, "the OS shut down after the soft-off") || strings.Contains(got, "cutting the power") {
		t.Fatalf("Off of an OS that obeys the soft-off: %s", got)
	}
	if shutdowns, _ := os.ReadFile(filepath.Join(sim.dir, "chassis", "log")); strings.Count(string(shutdowns), "shutdown") != 2 {
		t.Fatalf("the BMC saw %q, want two soft-offs", shutdowns)
	}

	// A wrong password: a clear error that names the BMC, no password in it, nothing changed.
	const wrong = "Wrong-Pass-0815"
	var badLogs testenv.LogBuffer
	bad := sim.driver(t, wrong, &badLogs)
	err = bad.On(ctx)
	if err == nil {
		t.Fatal("On with a wrong password succeeded")
	}
	t.Logf("wrong password: %v", err)
	bmc := net.JoinHostPort("127.0.0.1", strconv.Itoa(sim.port))
	if !strings.Contains(err.Error(), bmc) {
		t.Errorf("error does not name the BMC %s: %v", bmc, err)
	}
	if !strings.Contains(err.Error(), "check the BMC user and password") {
		t.Errorf("error does not say what to check: %v", err)
	}
	if !errors.Is(err, ErrBMCAuth) {
		t.Errorf("error is not ErrBMCAuth: %v", err)
	}
	if strings.Contains(badLogs.String(), "retrying") {
		t.Errorf("a refused login was retried: %s", badLogs.String())
	}
	for what, s := range map[string]string{"error": err.Error(), "good driver's logs": taken + logs.String(), "bad driver's logs": badLogs.String()} {
		if s == "" {
			t.Errorf("%s: nothing to search for the password", what)
		}
		for _, pw := range []string{wrong, simPassword} {
			if strings.Contains(s, pw) {
				t.Errorf("%s contains a password: %s", what, s)
			}
		}
	}
	if got := sim.powerPerIPMITool(t); got != "off" {
		t.Fatalf("after On with a wrong password ipmitool says power %s, want off", got)
	}
	t.Logf("power still off per ipmitool after the refused login")
}

func TestIPMIDriverReportsABMCThatDoesNotAnswer(t *testing.T) {
	// A bound UDP socket that never answers: every exchange times out.
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := c.LocalAddr().(*net.UDPAddr).Port
	var logs testenv.LogBuffer
	d, err := NewIPMI(IPMIConfig{Host: "127.0.0.1", Port: port, User: "admin", Password: "Never-Shown-42",
		Timeout: 200 * time.Millisecond, Attempts: 2, CipherSuite: 3,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Status(t.Context())
	if err == nil {
		t.Fatal("Status of a silent BMC succeeded")
	}
	t.Logf("silent BMC: %v", err)
	if !errors.Is(err, ErrBMCUnreachable) {
		t.Errorf("error is not ErrBMCUnreachable: %v", err)
	}
	for _, want := range []string{c.LocalAddr().String(), "check the BMC address and that IPMI over LAN is enabled", "2 attempts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("no retry was logged: %s", logs.String())
	}
	if strings.Contains(err.Error()+logs.String(), "Never-Shown-42") {
		t.Errorf("the password shows in the error or logs")
	}
}
