// Package ipmisim runs OpenIPMI's BMC simulator (Debian's openipmi: ipmi_sim) on a
// loopback UDP port, with a chassis whose power and boot device live in files, and
// checks it with Debian's ipmitool: a real IPMI 2.0 (RMCP+) BMC for tests and benches.
// It is a harness: it reports facts, tests decide.
package ipmisim

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// Sim is one running ipmi_sim with one administrator account.
type Sim struct {
	Port           int
	User, Password string
	dir            string
	cmd            *exec.Cmd
	exited         <-chan error
	out            *testenv.LogBuffer
}

// chassis is the control program ipmi_sim runs: `PROG DIR get power boot` prints
// "power:V" lines, `PROG DIR set power 1 boot pxe` stores them.
const chassis = `#!/bin/sh
dir=$1; op=$2; shift 2
if [ "$op" = get ]; then
  for p in "$@"; do
    case $p in
      power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)" ;;
      boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
      *) echo "invalid parameter: $p"; exit 1 ;;
    esac
  done
  exit 0
fi
[ "$op" = set ] || exit 1
# name value pairs: power and boot are kept, reset and shutdown need nothing kept
while [ $# -ge 2 ]; do
  name=$1; value=$2; shift 2
  case $name in power|boot) printf '%s\n' "$value" >"$dir/$name" ;; reset|shutdown) ;;
    *) echo "invalid parameter: $name"; exit 1 ;; esac
done
`

// Start runs a simulator in dir (which it fills) for user and password, and returns once
// ipmitool gets an answer from it, or ctx ends.
func Start(ctx context.Context, dir, user, password string) (*Sim, error) {
	bin, err := exec.LookPath("ipmi_sim")
	if err != nil {
		return nil, fmt.Errorf("ipmisim: %w (install Debian's openipmi)", err)
	}
	if _, err := exec.LookPath("ipmitool"); err != nil {
		return nil, fmt.Errorf("ipmisim: %w (install Debian's ipmitool)", err)
	}
	files := filepath.Join(dir, "chassis")
	store := filepath.Join(dir, "state")
	for _, d := range []string{files, store} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	prog := filepath.Join(dir, "chassis.sh")
	// A free port: taken from the kernel and given back for ipmi_sim to bind.
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := probe.LocalAddr().(*net.UDPAddr).Port
	_ = probe.Close()
	auths := "none md2 md5 straight"
	conf := strings.Join([]string{
		`name "rivet-sim"`, "set_working_mc 0x20", "startlan 1",
		fmt.Sprintf("  addr 127.0.0.1 %d", port), "  priv_limit admin",
		"  allowed_auths_callback " + auths, "  allowed_auths_user " + auths,
		"  allowed_auths_operator " + auths, "  allowed_auths_admin " + auths,
		"  guid 0123456789abcdef0123456789abcdef", "endlan",
		fmt.Sprintf(`chassis_control "%s %s"`, prog, files),
		fmt.Sprintf(`user 2 true "%s" "%s" admin 10 %s`, user, password, auths), "",
	}, "\n")
	emu := strings.Join([]string{"mc_setbmc 0x20",
		"mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr",
		"sel_enable 0x20 1000 0x0a", "mc_enable 0x20", ""}, "\n")
	for name, body := range map[string]string{prog: chassis, filepath.Join(dir, "lan.conf"): conf, filepath.Join(dir, "sim.emu"): emu} {
		if err := os.WriteFile(name, []byte(body), 0o700); err != nil {
			return nil, err
		}
	}
	s := &Sim{Port: port, User: user, Password: password, dir: dir, out: &testenv.LogBuffer{}}
	s.cmd = exec.Command(bin, "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", store, "-n")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if s.exited, err = testenv.StartTied(s.cmd, syscall.SIGKILL); err != nil {
		return nil, fmt.Errorf("ipmisim: starting ipmi_sim: %w", err)
	}
	err = testenv.Poll(ctx, 15*time.Second, "ipmi_sim to answer ipmitool", func() error {
		select {
		case err := <-s.exited:
			return fmt.Errorf("ipmi_sim exited: %v: %s", err, s.out.String())
		default:
		}
		_, err := s.IPMITool(ctx, "chassis", "power", "status")
		return err
	})
	if err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Addr is the BMC's host:port.
func (s *Sim) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

// Output is what ipmi_sim printed.
func (s *Sim) Output() string { return s.out.String() }

// Stop ends the simulator and waits for it.
func (s *Sim) Stop() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// IPMITool runs ipmitool (lanplus, cipher suite 3) against the simulator: the check that
// is not Rivet's own code.
func (s *Sim) IPMITool(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	base := []string{"-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", fmt.Sprint(s.Port),
		"-U", s.User, "-P", s.Password, "-R", "2", "-N", "1"}
	out, err := exec.CommandContext(ctx, "ipmitool", append(base, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Power is the chassis power as ipmitool reports it: "on" or "off".
func (s *Sim) Power(ctx context.Context) (string, error) {
	out, err := s.IPMITool(ctx, "chassis", "power", "status")
	if err != nil {
		return "", err
	}
	switch strings.TrimSpace(out) {
	case "Chassis Power is on":
		return "on", nil
	case "Chassis Power is off":
		return "off", nil
	}
	return "", fmt.Errorf("ipmitool chassis power status: unexpected answer %q", out)
}

// BootDevice is the boot device the chassis program was last given ("default" if none).
func (s *Sim) BootDevice() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "chassis", "boot"))
	if os.IsNotExist(err) {
		return "default", nil
	}
	return strings.TrimSpace(string(b)), err
}
