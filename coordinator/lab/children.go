package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
)

// The lab's long-lived processes besides the VMs: the coordinator, the router
// advertiser and the VMs' BMCs, each started in the lab's namespace in a session of its own so that it
// outlives `rivet lab up` and a Ctrl-C there. Each is recorded by a pid file in Dir and
// recognised by Dir in its command line (pids are reused).

type child struct {
	name string // coordinator, router-adverts, bmc-vmN
	bin  string // default the lab's rivet
	args []string
}

func (c *Config) pidFile(name string) string { return filepath.Join(c.Dir, name+".pid") }
func (c *Config) logFile(name string) string { return filepath.Join(c.Dir, name+".log") }

// coordinatorChild is `rivet coordinator` on the embedded default store, with full DHCP on
// the bridge. Raft listens on the namespace's own loopback: no port of the host is used.
func (c *Config) coordinatorChild(imageDir string) child {
	br := c.bridgeIP()
	args := []string{"coordinator", "--data-dir", c.coordinatorDir(), "--node-id", c.Name,
		"--api-addr", fmt.Sprintf("%s:%d", br, apiPort), "--raft-addr", "127.0.0.1:7400",
		"--advertise", br, "--gossip-addr", br + ":7946",
		"--boot-mode", "full", "--boot-interface", c.bridge(), "--boot-dir", c.bootDir(),
		"--boot-http-addr", fmt.Sprintf("%s:%d", br, bootHTTPPort),
		"--boot-pool-start", c.poolStart(), "--boot-pool-end", c.poolEnd(), "--boot-router", br,
		// TCG guests on a loaded host can fail the kernel's timer check and panic; with
		// panic=-1 a panicking agent reboots into a fresh try instead of hanging.
		"--boot-cmdline", "no_timer_check panic=-1",
		// ipmi_sim offers cipher suites it cannot do: asking it costs every session a
		// failed try. A VM that has not checked in 5 min after a reboot or a power-on is
		// cycled with PXE once through its BMC (the slowest step, the installed OS's first
		// boot under TCG, takes up to ~4 min on a busy host); an off waits 20 s for the OS
		// before the power is cut.
		"--ipmi-cipher-suite", "3", "--power-recover-after", labRecoverAfter.String(),
		"--power-soft-off-timeout", "20s"}
	if imageDir != "" {
		args = append(args, "--image-dir", imageDir)
	}
	return child{name: "coordinator", args: args}
}

// routerAdvertsChild sends IPv6 router advertisements on the bridge: without them iPXE
// waits ~13 s for IPv6 autoconfiguration on every network boot.
func (c *Config) routerAdvertsChild() child {
	return child{name: "router-adverts", args: []string{"lab", "router-adverts", "--interface", c.bridge(),
		"--prefix", c.ipv6Prefix(), "--lab-dir", c.Dir}}
}

// ipv6Prefix is the lab's unique local /64, e.g. fd00:232:80::/64.
func (c *Config) ipv6Prefix() string {
	parts := strings.Split(c.Subnet, ".")
	return fmt.Sprintf("fd00:%s:%s::/64", parts[1], parts[2])
}

// running returns the pid of the named child if it runs.
func (c *Config) running(name string) int {
	data, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if pid <= 0 || !c.ours(pid) {
		return 0
	}
	return pid
}

// ours reports whether pid is a live process of this lab (its command line names Dir).
func (c *Config) ours(pid int) bool {
	if !power.ProcessAlive(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && (bytes.Contains(cmdline, []byte(c.Dir+"/")) || bytes.Contains(cmdline, []byte(c.Dir+"\x00")))
}

// start runs ch detached in the lab's namespace unless it runs already. It returns the
// pid and whether it was started now.
func (c *Config) start(ch child) (int, bool, error) {
	if pid := c.running(ch.name); pid != 0 {
		return pid, false, nil
	}
	logf, err := os.OpenFile(c.logFile(ch.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, false, err
	}
	bin := ch.bin
	if bin == "" {
		bin = filepath.Join(c.BinDir, "rivet")
	}
	args := append([]string{"netns", "exec", c.netns(), bin}, ch.args...)
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return 0, false, fmt.Errorf("starting the lab's %s: %w", ch.name, err)
	}
	go func() { _ = cmd.Wait(); logf.Close() }() // collects it if it dies while Up runs
	pid := cmd.Process.Pid
	if err := os.WriteFile(c.pidFile(ch.name), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return 0, false, err
	}
	return pid, true, nil
}

// stop ends the named child: SIGTERM, then SIGKILL after grace.
func (c *Config) stop(ctx context.Context, name string, grace time.Duration) error {
	pid := c.running(name)
	if pid == 0 {
		return nil
	}
	return c.terminate(ctx, pid, grace)
}

func (c *Config) terminate(ctx context.Context, pid int, grace time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if c.waitExit(ctx, pid, grace) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if !c.waitExit(ctx, pid, 10*time.Second) {
		return fmt.Errorf("process %d survived SIGKILL", pid)
	}
	return nil
}

func (c *Config) waitExit(ctx context.Context, pid int, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !c.ours(pid) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !c.ours(pid)
}

// processes lists every live process of this lab but the caller.
func (c *Config) processes() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if c.ours(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}
