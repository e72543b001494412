package netclaim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/internal/testenv"
)

func TestProcessStartNamesOneProcess(t *testing.T) {
	self := ProcessStart(os.Getpid())
	if self == "" || strings.Trim(self, "0123456789") != "" {
		t.Fatalf("start time of this process = %q, want a number", self)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if got := ProcessStart(cmd.Process.Pid); got != "" {
		t.Fatalf("start time of exited process %d = %q, want empty", cmd.Process.Pid, got)
	}
}

// TestSweepRemovesOnlyDeadOwnersLeftovers makes a namespace and a host veth the way a
// killed test leaves them, claimed by a dead process, and a second pair claimed by this
// live process: the sweep removes the first and keeps the second, which Release removes.
func TestSweepRemovesOnlyDeadOwnersLeftovers(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	tag := func() string {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		return "rvtc" + hex.EncodeToString(b)
	}
	dead, live := tag(), tag()
	t.Cleanup(func() {
		for _, n := range []string{dead, live} {
			_ = exec.Command("ip", "netns", "del", n+"n").Run()
			_ = exec.Command("ip", "link", "del", n+"h").Run()
			_ = os.Remove(filepath.Join(Dir, n+".json"))
		}
	})

	// The dead owner: a process that has exited, so its pid has no start time (or, if the
	// pid was reused already, a different one).
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	rec := record{PID: exited.Process.Pid, Start: "1", Namespaces: []string{dead + "n"}, Links: []string{dead + "h"}}
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rec)
	if err := os.WriteFile(filepath.Join(Dir, dead+".json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	makeNetns(t, dead)

	c, removed, err := New(live)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Namespace(live + "n"); err != nil {
		t.Fatal(err)
	}
	if err := c.Link(live + "h"); err != nil {
		t.Fatal(err)
	}
	makeNetns(t, live)

	if !strings.Contains(strings.Join(removed, "\n"), dead+"n") {
		t.Errorf("New's sweep did not report the dead owner's namespace: %q", removed)
	}
	if exists(dead) {
		t.Fatalf("the dead owner's namespace or link is still there")
	}
	if _, err := os.Stat(filepath.Join(Dir, dead+".json")); !os.IsNotExist(err) {
		t.Errorf("the dead owner's claim file is still there: %v", err)
	}

	Sweep()
	if !exists(live) {
		t.Fatalf("a sweep removed a live owner's namespace or link")
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	if exists(live) {
		t.Fatalf("Release left the namespace or link behind")
	}
	if _, err := os.Stat(filepath.Join(Dir, live+".json")); !os.IsNotExist(err) {
		t.Errorf("Release left its claim file: %v", err)
	}
}

// makeNetns creates namespace tag+"n" and a veth whose host end is tag+"h".
func makeNetns(t *testing.T, tag string) {
	t.Helper()
	for _, args := range [][]string{
		{"netns", "add", tag + "n"},
		{"link", "add", tag + "h", "type", "veth", "peer", "name", "eth0", "netns", tag + "n"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
}

// exists reports whether either the namespace or the host link of tag exists.
func exists(tag string) bool {
	_, nsErr := os.Stat(filepath.Join("/run/netns", tag+"n"))
	return nsErr == nil || linkExists(tag+"h")
}

func TestAddressHolderFindsLoopback(t *testing.T) {
	testenv.RequireCommand(t, "ip")
	if got, err := AddressHolder("127.0.0.1"); err != nil || got != "lo" {
		t.Fatalf("AddressHolder(127.0.0.1) = %q, %v; want lo", got, err)
	}
	if got, err := AddressHolder("127.0.0.2"); err != nil || got != "" {
		t.Fatalf("AddressHolder(127.0.0.2) = %q, %v; want none", got, err)
	}
}

func TestSubnetHolderFindsLoopbacksSubnet(t *testing.T) {
	testenv.RequireCommand(t, "ip")
	if got, err := SubnetHolder("127.0.0"); err != nil || got != "lo" {
		t.Fatalf("SubnetHolder(127.0.0) = %q, %v; want lo", got, err)
	}
	// 127.0.0.1/8 is in 127.0.0.0/24 but not in 127.0.1.0/24, nor is 10.127.0.x.
	for _, prefix := range []string{"127.0.1", "27.0.0"} {
		if got, err := SubnetHolder(prefix); err != nil || got != "" {
			t.Fatalf("SubnetHolder(%s) = %q, %v; want none", prefix, got, err)
		}
	}
}
