// Package boot does the RAM agent's PID-1 duties: mount the kernel filesystems, load the
// NIC and disk drivers the hardware needs (by modalias, from the index rivet-mkinitramfs
// wrote), bring up the network with DHCP, read Rivet's keys from the kernel command line,
// reap orphaned processes, and reboot or power off.
//
// It stays small on purpose: it is linked into rivet-agent, which travels to every
// machine on every PXE boot.
package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/shared"
)

// Console progress steps. Prepare prints steps 1 to PrepareSteps; the agent's run loop
// prints the rest with Env.Progress.
const (
	PrepareSteps = 3
	TotalSteps   = 6
)

// Env is what the agent knows once Prepare has returned.
type Env struct {
	Params    shared.BootParams // Rivet's keys from /proc/cmdline
	Interface string            // the NIC that got the DHCP lease, e.g. "eth0"
	MAC       net.HardwareAddr  // its hardware address
	IP        netip.Addr        // the leased address
	Prefix    netip.Prefix      // the leased address with its prefix length, e.g. 10.0.0.23/24
	Gateway   netip.Addr        // default gateway; invalid when the lease has none
	DNS       []netip.Addr
	Modules   []string  // kernel modules loaded, in load order
	Console   io.Writer // the operator's console(s); keep writing progress here
	Started   time.Time // when Prepare began

	progress *progress
	stop     context.CancelFunc // stops the DHCP lease renewal
}

// Progress prints a numbered console line: "rivet: [4/6] registered as m-1234".
func (e *Env) Progress(step int, format string, args ...any) {
	e.progress.step(step, format, args...)
}

// Close stops the background DHCP lease renewal.
func (e *Env) Close() error {
	if e.stop != nil {
		e.stop()
	}
	return nil
}

// IsPID1 reports whether this process is the init process (the RAM agent as /init).
func IsPID1() bool { return os.Getpid() == 1 }

// Prepare readies a freshly booted machine for the agent: filesystems, drivers, network.
// It prints steps 1..3 on console (nil: the kernel's active consoles plus ttyS0, opened
// here). It waits for a DHCP lease until ctx ends; the lease is then renewed in the
// background until Env.Close. When the agent is PID 1 it also starts the zombie reaper.
func Prepare(ctx context.Context, log *slog.Logger, console io.Writer) (*Env, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	env := &Env{Started: time.Now()}
	if IsPID1() {
		StartReaper(log)
	}
	if err := mountAll(); err != nil {
		fmt.Fprintf(orStdout(console), "rivet: FAILED to mount filesystems: %v\n", err)
		return nil, err
	}
	if console == nil {
		console = openConsoles()
	}
	env.Console = console
	env.progress = &progress{w: console}

	warnLowMemory(env.progress)
	params, release, cmdline, err := readKernelFacts()
	if err != nil {
		env.progress.printf("FAILED: %v", err)
		return nil, err
	}
	env.Params = params
	bootIF, err := parseBootIF(cmdline)
	if err != nil {
		env.progress.printf("WARNING: %v; ignoring it and searching for the NIC that reaches the coordinator", err)
	}
	coordinator := strings.Join(params.URLs, ",")
	if coordinator == "" {
		coordinator = "none (" + shared.CmdlineURL + "= is missing from the kernel command line)"
	}
	env.progress.step(1, "system ready: kernel %s, coordinator %s", release, coordinator)

	db, err := openModuleDB(filepath.Join("/lib/modules", release))
	if err != nil {
		env.progress.printf("FAILED: %v", err)
		return nil, err
	}
	drivers := newDriverLoader(db, log)
	drivers.settle()
	env.Modules = drivers.loaded
	env.progress.step(2, "drivers loaded: %s", describeModules(env.Modules))

	// A guard with a message: by now the kernel is usually seeded, either by RDRAND at
	// boot or because a package init (memberlist's seed.Init reads crypto/rand) already
	// blocked on it before main, which makes the kernel seed itself from CPU jitter.
	if err := waitForEntropy(ctx, env.progress); err != nil {
		env.progress.printf("FAILED: kernel random number generator: %v", err)
		return nil, err
	}

	res, info, err := bringUpNetwork(ctx, log, drivers, env.progress, bootIF, params.URLs)
	if err != nil {
		env.progress.printf("FAILED: %v", err)
		return nil, err
	}
	env.Modules = drivers.loaded // late NIC drivers, if any
	env.Interface, env.MAC = res.iface, res.mac
	env.IP, env.Prefix, env.DNS = info.Addr.Addr(), info.Addr, info.DNS
	for _, r := range info.Routes {
		if r.Dst.Bits() == 0 {
			env.Gateway = r.Gateway
		}
	}
	renewCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	env.stop = stop
	go renewLoop(renewCtx, log, res, info.Renew)
	via := ""
	if env.Gateway.IsValid() {
		via = " via " + env.Gateway.String()
	}
	env.progress.step(3, "network up: %s %s%s (%s)", env.Interface, env.Prefix, via, time.Since(env.Started).Round(time.Millisecond))
	return env, nil
}

// readKernelFacts reads /proc/cmdline and the running kernel's release.
func readKernelFacts() (params shared.BootParams, release, cmdline string, err error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return params, "", "", err
	}
	release = unix.ByteSliceToString(uts.Release[:])
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return params, release, "", err
	}
	cmdline = string(raw)
	params, err = shared.ParseCmdline(cmdline)
	if err != nil {
		return params, release, cmdline, fmt.Errorf("kernel command line: %w (check the iPXE script the coordinator served)", err)
	}
	return params, release, cmdline, nil
}

func describeModules(mods []string) string {
	if len(mods) == 0 {
		return "none needed"
	}
	return fmt.Sprintf("%s (%d)", strings.Join(mods, " "), len(mods))
}

func orStdout(w io.Writer) io.Writer {
	if w == nil {
		return os.Stdout
	}
	return w
}

// Reboot syncs the filesystems and restarts the machine. Only PID 1 may do this: in
// service mode the agent must ask systemd (systemctl reboot) instead.
func Reboot() error { return shutdown(unix.LINUX_REBOOT_CMD_RESTART) }

// PowerOff syncs the filesystems and powers the machine off (PID 1 only).
func PowerOff() error { return shutdown(unix.LINUX_REBOOT_CMD_POWER_OFF) }

func shutdown(cmd int) error {
	if !IsPID1() {
		return errors.New("boot: reboot and power-off are for the RAM agent as PID 1; under systemd use systemctl")
	}
	unix.Sync()
	quiesceNICs()
	return unix.Reboot(cmd)
}

// quiesceNICs takes every NIC down before the restart, so that no transmit is in
// flight while the kernel shuts its devices down: a busy virtio NIC has hung a TCG
// guest's reboot in a soft lockup in start_xmit. Errors change nothing: the reboot
// goes ahead either way.
func quiesceNICs() {
	links, err := netlink.LinkList()
	if err != nil {
		return
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			_ = netlink.LinkSetDown(l)
		}
	}
}
