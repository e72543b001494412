package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/netclaim"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// netLab is a LAN for agents: a bridge in its own network namespace, a veth from the
// host (the coordinator listens on HostIP there), and one namespace per machine, each
// with its own address. Everything is removed in t.Cleanup, also when the test fails.
type netLab struct {
	t      *testing.T
	prefix string // e.g. "10.232.50"
	tag    string // unique per run: keeps parallel tests and leftovers apart
	lan    string // the bridge's namespace
	HostIP string
	HostIf string // the host's end of the veth to the bridge, where HostIP is
	name   string // first letters of every namespace and link name
	hosts  []string
	claim  *netclaim.Claim // lets the next run remove what a killed run left
}

func newNetLab(t *testing.T, prefix string) *netLab {
	t.Helper()
	return newNamedNetLab(t, prefix, "rvt")
}

// newNamedNetLab is newNetLab with every namespace and host link named name+...
// (e.g. "rvtp"), so that tests of different areas can tell their leftovers apart.
func newNamedNetLab(t *testing.T, prefix, name string) *netLab {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	l := &netLab{t: t, prefix: prefix, tag: hex.EncodeToString(b), HostIP: prefix + ".1", name: name}
	l.lan = name + "l" + l.tag
	l.HostIf = name + "h" + l.tag
	claim, swept, err := netclaim.New(l.lan)
	for _, line := range swept {
		t.Logf("netclaim: %s", line)
	}
	if err != nil {
		t.Fatalf("recording the lab's namespaces: %v", err)
	}
	l.claim = claim
	requireFreeAddress(t, l.HostIP)
	t.Cleanup(l.down)
	l.record(claim.Namespace(l.lan), claim.Link(l.HostIf))
	l.ip("netns", "add", l.lan)
	l.ip("-n", l.lan, "link", "set", "lo", "up")
	l.ip("-n", l.lan, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.lan, "link", "set", "br0", "up")
	l.ip("link", "add", l.HostIf, "type", "veth", "peer", "name", "up0", "netns", l.lan)
	l.ip("-n", l.lan, "link", "set", "up0", "master", "br0", "up")
	l.ip("addr", "add", l.HostIP+"/24", "dev", l.HostIf)
	l.ip("link", "set", l.HostIf, "up")
	return l
}

// AddHost creates namespace number i with address prefix.(10+i) on the bridge and
// returns its name and IP.
func (l *netLab) AddHost(i int) (ns, ip string) {
	ns = fmt.Sprintf("%s%s-%d", l.name, l.tag, i)
	ip = fmt.Sprintf("%s.%d", l.prefix, 10+i)
	l.record(l.claim.Namespace(ns))
	l.ip("netns", "add", ns)
	l.hosts = append(l.hosts, ns)
	l.ip("-n", ns, "link", "set", "lo", "up")
	l.ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", fmt.Sprintf("p%d", i), "netns", l.lan)
	l.ip("-n", l.lan, "link", "set", fmt.Sprintf("p%d", i), "master", "br0", "up")
	l.ip("-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
	l.ip("-n", ns, "link", "set", "eth0", "up")
	return ns, ip
}

func (l *netLab) record(errs ...error) {
	l.t.Helper()
	if err := errors.Join(errs...); err != nil {
		l.t.Fatalf("recording the lab's namespaces: %v", err)
	}
}

// requireFreeAddress fails when ip is already on a host link: a second gateway with the
// same address would take the test's traffic.
func requireFreeAddress(t *testing.T, ip string) {
	t.Helper()
	holder, err := netclaim.AddressHolder(ip)
	if err != nil {
		t.Fatal(err)
	}
	if holder != "" {
		t.Fatalf("%s is already on host link %s, so this test's traffic would not reach its own lab: "+
			"remove the leftover with `ip link del %s`", ip, holder, holder)
	}
}

func (l *netLab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// down removes every namespace (with their veths) and the host veth, and waits for the
// kernel to finish: namespaces are destroyed asynchronously.
func (l *netLab) down() {
	// The claim names every namespace and the host veth; releasing it removes them.
	if err := l.claim.Release(); err != nil {
		l.t.Errorf("removing the lab's namespaces: %v", err)
	}
	if err := testenv.Poll(context.Background(), 10*time.Second, "the host veth "+l.HostIf+" removed", func() error {
		out, _ := exec.Command("ip", "-br", "link").Output()
		if strings.Contains(string(out), l.HostIf) {
			return fmt.Errorf("ip link:\n%s", out)
		}
		return nil
	}); err != nil {
		l.t.Error(err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), l.tag) {
		l.t.Errorf("network namespaces left behind: %s", out)
	}
}

func testenvLong(t *testing.T) { testenv.Long(t) }
