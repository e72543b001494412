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

	"github.com/rivetmetal/rivet/internal/ipmisim/simconf"
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

// FreePort returns a UDP port on 127.0.0.1 that was free a moment ago: taken from the
// kernel and given back for ipmi_sim to bind.
func FreePort() (int, error) {
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer probe.Close()
	return probe.LocalAddr().(*net.UDPAddr).Port, nil
}

// Start runs a simulator in dir (which it fills) for user and password, with a chassis
// whose power and boot device live in files, and returns once ipmitool gets an answer
// from it, or ctx ends.
func Start(ctx context.Context, dir, user, password string) (*Sim, error) {
	files := filepath.Join(dir, "chassis")
	if err := os.MkdirAll(files, 0o700); err != nil {
		return nil, err
	}
	prog := filepath.Join(dir, "chassis.sh")
	if err := os.WriteFile(prog, []byte(chassis), 0o700); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	o := simconf.Options{Addr: "127.0.0.1", Port: port, User: user, Password: password, Chassis: prog + " " + files}
	if err := simconf.Write(dir, o); err != nil {
		return nil, err
	}
	return Run(ctx, dir, o)
}

// Run starts ipmi_sim on the configuration Write put in dir for o, and returns once
// ipmitool gets an answer from it, or ctx ends.
func Run(ctx context.Context, dir string, o simconf.Options) (*Sim, error) {
	if _, err := exec.LookPath("ipmi_sim"); err != nil {
		return nil, fmt.Errorf("ipmisim: %w (install Debian's openipmi)", err)
	}
	if _, err := exec.LookPath("ipmitool"); err != nil {
		return nil, fmt.Errorf("ipmisim: %w (install Debian's ipmitool)", err)
	}
	s := &Sim{Port: o.Port, User: o.User, Password: o.Password, dir: dir, out: &testenv.LogBuffer{}}
	argv := simconf.Command(dir)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	var err error
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
