package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// TestAdvertiseRouter proves the advertisements are real: a Linux host in another
// namespace on the same link configures an address from the advertised prefix, as
// iPXE's IPv6 setup completes on one.
func TestAdvertiseRouter(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	nsA, nsB := "rvtra"+hex.EncodeToString(b), "rvtrb"+hex.EncodeToString(b)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", nsA).Run()
		_ = exec.Command("ip", "netns", "del", nsB).Run()
	})
	run("netns", "add", nsA)
	run("netns", "add", nsB)
	run("-n", nsA, "link", "add", "ra0", "type", "veth", "peer", "name", "rb0", "netns", nsB)
	run("-n", nsA, "link", "set", "ra0", "up")
	run("-n", nsB, "link", "set", "rb0", "up")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// This thread enters namespace A for good (never unlocked: Go discards it).
		runtime.LockOSThread()
		ns, err := os.Open("/run/netns/" + nsA)
		if err != nil {
			done <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		done <- AdvertiseRouter(ctx, "ra0", "fd00:232:99::/64", 200*time.Millisecond)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("AdvertiseRouter: %v", err)
		}
	}()
	testenv.Eventually(t, 30*time.Second, "an address from the advertised prefix", func() error {
		select {
		case err := <-done:
			t.Fatalf("AdvertiseRouter ended early: %v", err)
		default:
		}
		out, _ := exec.Command("ip", "-n", nsB, "-6", "addr", "show", "dev", "rb0").CombinedOutput()
		if !strings.Contains(string(out), "fd00:232:99:") {
			return fmt.Errorf("addresses of rb0:\n%s", out)
		}
		return nil
	})
}
