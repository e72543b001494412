package lab

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/rivetmetal/rivet/coordinator/power"
)

// Chassis is the chassis_control program of a lab VM's BMC (OpenIPMI's ipmi_sim, see
// lanserv/bmc_chassis.c): ipmi_sim runs it as `... get NAME...` or `... set NAME VALUE...`
// for every power and boot-device request, and the VM's qemu driver does the work, so
// QMP stays inside the BMC. `get` prints one "name:value" line per parameter. Power on
// returns once QMP reports the guest running (about a second under TCG); qemu runs in a
// session of its own with its output in its own log, so it outlives this program and
// ipmi_sim waits on nothing of it.
//
// ipmi_sim (2.0.33) runs the program synchronously and answers nothing else meanwhile,
// and every retransmission of a request runs it again (measured: a 4 s program behind
// `ipmitool chassis power on` ran three times, 12 s; a status asked meanwhile waited).
// So each request must finish well within a client's retry timeout (ipmitool's is 1-2 s)
// and be idempotent: power on checks the pid first; a reset that overran would cycle twice.
func Chassis(ctx context.Context, cfg Config, vm int, args []string, out io.Writer) error {
	m, err := Power(cfg, vm)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		return errors.New("chassis: want an operation: get with names, or set with name value pairs")
	}
	switch op, params := args[0], args[1:]; op {
	case "get":
		return chassisGet(ctx, m, params, out)
	case "set":
		if len(params)%2 != 0 {
			return fmt.Errorf("chassis set %v: want NAME VALUE pairs", params)
		}
		for i := 0; i < len(params); i += 2 {
			if err := chassisSet(ctx, m, params[i], params[i+1]); err != nil {
				fmt.Fprintln(out, err)
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("chassis: operation %q: want get or set", op)
	}
}

func chassisGet(ctx context.Context, m *power.QEMU, params []string, out io.Writer) error {
	for _, p := range params {
		switch p {
		case "power":
			st, err := m.Status(ctx)
			if err != nil {
				return err
			}
			v := 0
			if st == power.StateOn {
				v = 1
			}
			fmt.Fprintf(out, "power:%d\n", v)
		case "boot":
			// IPMI's "force hard drive" is what ipmi_sim calls default.
			v := "pxe"
			if m.BootDevice() == power.BootDisk {
				v = "default"
			}
			fmt.Fprintf(out, "boot:%s\n", v)
		default:
			err := fmt.Errorf("chassis get: unknown parameter %q (want power or boot)", p)
			fmt.Fprintln(out, err)
			return err
		}
	}
	return nil
}

// chassisSet does one request. A reset is a cold cycle (off, then on) so that a boot
// device chosen since the start takes effect, as on a real machine.
func chassisSet(ctx context.Context, m *power.QEMU, name, value string) error {
	switch name + " " + value {
	case "power 1":
		return m.On(ctx)
	case "power 0":
		return m.Off(ctx)
	case "reset 1":
		if err := m.Off(ctx); err != nil {
			return err
		}
		return m.On(ctx)
	case "shutdown 1":
		return m.Powerdown(ctx)
	case "reset 0", "shutdown 0", "boot none":
		return nil
	case "boot pxe":
		return m.SetBootDevice(ctx, power.BootPXE)
	case "boot default":
		return m.SetBootDevice(ctx, power.BootDisk)
	}
	return fmt.Errorf("chassis set: unsupported %s %q (want power 0|1, reset 1, shutdown 1, boot none|pxe|default)", name, value)
}
