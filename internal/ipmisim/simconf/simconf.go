// Package simconf writes the configuration of OpenIPMI's BMC simulator (ipmi_sim): one
// LAN channel, one administrator, and a chassis_control program that does the power and
// the boot device. The lab's BMCs (coordinator/lab) and the test harness
// (internal/ipmisim) both use it; it imports nothing of the tests, so the rivet binary
// may link it.
package simconf

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Options is one BMC's configuration: where it listens, its administrator account and
// the chassis_control program that does its power and boot device.
type Options struct {
	Addr           string // IP address to listen on, e.g. 127.0.0.1
	Port           int    // UDP port
	User, Password string
	// Chassis is the chassis_control command line: the program and its fixed arguments.
	// ipmi_sim appends "get NAME..." or "set NAME VALUE...".
	Chassis string
}

// auths are the authentication types every privilege level accepts.
const auths = "none md2 md5 straight"

// Write puts ipmi_sim's configuration for o into dir: lan.conf (0600, as it holds the
// password, as a BMC's own store does), sim.emu, and the state directory.
func Write(dir string, o Options) error {
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		return err
	}
	conf := strings.Join([]string{
		`name "rivet-sim"`, "set_working_mc 0x20", "startlan 1",
		fmt.Sprintf("  addr %s %d", o.Addr, o.Port), "  priv_limit admin",
		"  allowed_auths_callback " + auths, "  allowed_auths_user " + auths,
		"  allowed_auths_operator " + auths, "  allowed_auths_admin " + auths,
		"  guid 0123456789abcdef0123456789abcdef", "endlan",
		fmt.Sprintf(`chassis_control "%s"`, o.Chassis),
		fmt.Sprintf(`user 2 true "%s" "%s" admin 10 %s`, o.User, o.Password, auths), "",
	}, "\n")
	emu := strings.Join([]string{"mc_setbmc 0x20",
		"mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr",
		"sel_enable 0x20 1000 0x0a", "mc_enable 0x20", ""}, "\n")
	if err := os.WriteFile(filepath.Join(dir, "lan.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sim.emu"), []byte(emu), 0o644)
}

// Command is ipmi_sim's command line for the configuration Write put in dir.
func Command(dir string) []string {
	return []string{"ipmi_sim", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"),
		"-s", filepath.Join(dir, "state"), "-n"}
}
