package boot

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Zombie reaping. As PID 1 the agent inherits every orphaned process (a tool that
// double-forks, a shell pipeline whose parent died) and must wait on it, or zombies
// pile up. A blind wait4(-1) loop would also steal the exit status of processes the
// agent started with os/exec, whose Wait would then fail with ECHILD. Since Go 1.23,
// os/exec holds a pidfd for each child until Wait returns, so the reaper skips every
// process the agent holds a pidfd for and, as a second guard for kernels without
// pidfds, leaves a zombie alone until it has stayed unreaped for reapGrace.

const (
	reapGrace = time.Second
	reapSweep = 2 * time.Second
)

var reaperOnce sync.Once

// StartReaper starts reaping orphaned zombies in the background; calls after the first
// do nothing. Prepare calls it when the agent is PID 1. A process that is a subreaper
// (prctl PR_SET_CHILD_SUBREAPER) may call it too.
func StartReaper(log *slog.Logger) {
	reaperOnce.Do(func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, unix.SIGCHLD)
		go func() {
			seen := map[int]time.Time{}
			tick := time.NewTicker(reapSweep)
			defer tick.Stop()
			for {
				select {
				case <-sig:
				case <-tick.C:
				}
				for _, pid := range reapOrphans(seen, time.Now(), reapGrace) {
					log.Debug("reaped orphaned process", "pid", pid)
				}
			}
		}()
	})
}

// reapOrphans reaps zombie children that no os/exec caller is waiting for and that have
// been zombies for at least grace. seen remembers when each zombie was first noticed.
func reapOrphans(seen map[int]time.Time, now time.Time, grace time.Duration) []int {
	// Zombies first, pidfds second: os/exec gets a child's pidfd atomically at clone, so
	// every zombie found here that an os/exec caller owns shows up in the later pidfd
	// scan. The other order would miss a child started and exited between the scans.
	zombies := zombieChildren(os.Getpid())
	owned := pidfdPIDs()
	var reaped []int
	for pid := range seen {
		if !zombies[pid] {
			delete(seen, pid) // reaped by its owner or by us
		}
	}
	for pid := range zombies {
		if owned[pid] {
			continue
		}
		first, ok := seen[pid]
		if !ok {
			seen[pid], first = now, now
		}
		if now.Sub(first) < grace {
			continue
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			reaped = append(reaped, pid)
			delete(seen, pid)
		}
	}
	return reaped
}

// zombieChildren scans /proc for processes in state Z whose parent is ppid.
func zombieChildren(ppid int) map[int]bool {
	out := map[int]bool{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		state, parent, ok := parseStat(stat)
		if ok && state == 'Z' && parent == ppid {
			out[pid] = true
		}
	}
	return out
}

// parseStat reads the state and ppid from /proc/<pid>/stat: "pid (comm) S ppid ...".
// comm may contain spaces and parentheses, so parse after the last ')'.
func parseStat(stat []byte) (state byte, ppid int, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], ppid, true
}

// pidfdPIDs returns the PIDs this process holds pidfds for (os/exec children not yet
// waited for), from the "Pid:" line of /proc/self/fdinfo/<fd>.
func pidfdPIDs() map[int]bool {
	out := map[int]bool{}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return out
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || !strings.Contains(target, "pidfd") {
			continue
		}
		f, err := os.Open(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Pid:"); ok {
				if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && pid > 0 {
					out[pid] = true
				}
			}
		}
		f.Close()
	}
	return out
}
