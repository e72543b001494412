package boot

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// The test process becomes a subreaper, so orphans are re-parented to it as they are to
// PID 1 in the RAM agent.
func becomeSubreaper(t *testing.T) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

func TestReaperReapsOrphans(t *testing.T) {
	becomeSubreaper(t)
	StartReaper(slog.New(slog.DiscardHandler))
	out, err := exec.Command("sh", "-c", "sleep 1 >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("orphan pid %q: %v", out, err)
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatalf("orphan %d already gone: %v", pid, err)
	}
	if _, ppid, ok := parseStat(stat); !ok || ppid != os.Getpid() {
		t.Fatalf("orphan %d has parent %d, want this process %d", pid, ppid, os.Getpid())
	}
	// Until the reaper waits on it, the exited orphan stays a zombie in /proc.
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("orphan %d reaped", pid), func() error {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("/proc/%d still there (stat: %v)", pid, err)
		}
		return nil
	})
}

// The reaper must never steal the exit status of a process started with os/exec, even
// when it sweeps constantly and the grace period has long passed.
func TestReaperLeavesExecChildrenToTheirOwners(t *testing.T) {
	becomeSubreaper(t)
	stop := make(chan struct{})
	var sweeper sync.WaitGroup
	sweeper.Add(1)
	go func() {
		defer sweeper.Done()
		seen := map[int]time.Time{}
		for {
			select {
			case <-stop:
				return
			default:
			}
			reapOrphans(seen, time.Now(), 0) // no grace: only the pidfd check protects them
		}
	}()
	defer func() { close(stop); sweeper.Wait() }()

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("sh", "-c", "exit 7")
			if err := cmd.Start(); err != nil {
				errs <- err
				return
			}
			// The child exits at once and stays a zombie until Wait: the sweeper sees it
			// over and over in this window and must leave it alone.
			time.Sleep(200 * time.Millisecond)
			err := cmd.Wait()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 7 {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("exec child lost its exit status to the reaper: %v", err)
	}
}

func TestParseStat(t *testing.T) {
	state, ppid, ok := parseStat([]byte("1234 (a) b (c)) Z 1 1234 1234 0 -1"))
	if !ok || state != 'Z' || ppid != 1 {
		t.Fatalf("parseStat = %c %d %v", state, ppid, ok)
	}
	if _, _, ok := parseStat([]byte("garbage")); ok {
		t.Fatal("garbage parsed")
	}
}
