// Package dhcptest gives DHCP tests and benchmarks a private network: two network
// namespaces joined by a veth pair, and a PXE client that speaks from one of them.
// Everything needs root; callers guard with internal/testenv.
package dhcptest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/internal/netclaim"
)

// Pair is two network namespaces, a server side and a client side, joined by one veth
// pair. Nothing in them can reach the host's networks.
type Pair struct {
	ServerNS, ClientNS string // names under /run/netns
	ServerIf, ClientIf string // veth ends, one in each namespace
	ServerIP, ClientIP net.IP // on a /24
	claim              *netclaim.Claim
}

// NewPair creates a Pair whose names start with prefix (e.g. "rvt") plus a random
// suffix, so parallel tests never collide. subnet is the third octet of 10.77.x.0/24.
// Close removes everything; if the test process dies first (a panic, a kill), the next
// NewPair in any process removes it (internal/netclaim).
func NewPair(prefix string, subnet byte) (*Pair, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	id := prefix + hex.EncodeToString(b[:])
	p := &Pair{
		ServerNS: id + "s", ClientNS: id + "c",
		ServerIf: id + "s0", ClientIf: id + "c0",
		ServerIP: net.IPv4(10, 77, subnet, 1).To4(), ClientIP: net.IPv4(10, 77, subnet, 2).To4(),
	}
	claim, _, err := netclaim.New(id)
	if err != nil {
		return nil, fmt.Errorf("dhcptest: claim for %s: %w", id, err)
	}
	p.claim = claim
	for _, ns := range []string{p.ServerNS, p.ClientNS} {
		if err := claim.Namespace(ns); err != nil {
			claim.Release()
			return nil, fmt.Errorf("dhcptest: claim for %s: %w", id, err)
		}
	}
	steps := [][]string{
		{"netns", "add", p.ServerNS},
		{"netns", "add", p.ClientNS},
		{"-n", p.ServerNS, "link", "add", p.ServerIf, "type", "veth", "peer", "name", p.ClientIf, "netns", p.ClientNS},
		{"-n", p.ServerNS, "addr", "add", p.ServerIP.String() + "/24", "dev", p.ServerIf},
		{"-n", p.ClientNS, "addr", "add", p.ClientIP.String() + "/24", "dev", p.ClientIf},
		{"-n", p.ServerNS, "link", "set", "lo", "up"},
		{"-n", p.ClientNS, "link", "set", "lo", "up"},
		{"-n", p.ServerNS, "link", "set", p.ServerIf, "up"},
		{"-n", p.ClientNS, "link", "set", p.ClientIf, "up"},
	}
	for _, args := range steps {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			p.Close()
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return p, nil
}

// Close deletes both namespaces (which deletes the veth pair) and the claim on them.
func (p *Pair) Close() error {
	return p.claim.Release()
}

// Do runs fn on an OS thread that has entered namespace ns. Sockets fn opens stay in ns
// for their whole life. The thread is never returned to the Go scheduler (it exits with
// the goroutine), so no other goroutine ever runs in the wrong namespace.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // deliberately never unlocked
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Exec returns an *exec.Cmd that runs name inside namespace ns (via `ip netns exec`).
func Exec(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}
