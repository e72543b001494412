// Package swarmlab brings up N real dockerd instances for a test, each in its own network
// namespace with its own address on a private bridge, so that they can form a real Docker
// Swarm on one machine. It follows docs/lab-notes.md ("Docker Swarm in network namespaces"): every node runs
// under `ip netns exec NS unshare --uts --mount`, remounts the cgroup hierarchies, gets a
// private tmpfs on the paths dockerd and containerd hard-code, its own /etc/docker and
// hostname, and a cgroup parent of its own; the bridge lives in a namespace of its own and
// the host reaches it through one veth.
//
// Everything a lab creates carries a unique name (prefix "rvt") and is removed by
// t.Cleanup, also when the test fails: processes (dockerd, containerd, shims, containers),
// namespaces, links, cgroups, mounts and directories. A lab left behind by a test binary
// that was killed (a test timeout skips t.Cleanup) is removed by the next Up.
package swarmlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// Config describes a lab.
type Config struct {
	// Subnet of the lab's bridge, e.g. "10.231.7.0/24" (required). The host side gets the
	// first address, node i the address 10+i. Tests running at the same time must use
	// different subnets: the host's veth routes the whole subnet.
	Subnet string
	// Wait bounds how long a dockerd may take to answer. Default one minute.
	Wait time.Duration
	// DockerdArgs are extra dockerd flags for every node.
	DockerdArgs []string
	// Hosts is how many plain namespaces (no dockerd) to add on the bridge, for other
	// parties of a test: coordinators, an attacker. Host i gets the address 200+i.
	Hosts int
}

// Lab is a set of dockerd nodes on one private bridge.
type Lab struct {
	Name     string // unique per run, e.g. "rvt3fa91"; prefix of every name the lab uses
	Subnet   netip.Prefix
	HostIP   netip.Addr // the host's address on the bridge (a coordinator can listen here)
	HostLink string     // the host's veth
	Nodes    []*Node
	Hosts    []*Host

	cfg      Config
	dir      string
	downOnce sync.Once
	downErr  error
}

// Host is a plain network namespace on the lab's bridge; Teardown removes it and every
// process in it.
type Host struct {
	NetNS string
	IP    netip.Addr
}

// Node is one dockerd in its own network namespace.
type Node struct {
	Index  int        // 1-based
	Name   string     // hostname, network namespace and cgroup parent, e.g. "rvt3fa91-n2"
	NetNS  string     // network namespace (same as Name)
	IP     netip.Addr // its address on the bridge
	Socket string     // path of its docker socket (reachable from the host's namespaces)
	Dir    string     // its state: data-root, exec-root, /etc/docker, dockerd.log

	lab  *Lab
	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc has exited
}

// baseDir holds one directory per lab. It is shared by every lab on the machine (and is the
// lock that serialises their setup and teardown), so it stays; labs inside it do not.
const baseDir = "/tmp/rivet-swarmlab"

// Up starts n dockerd nodes and registers their removal with t.Cleanup. It needs root, ip,
// unshare and dockerd; without them the test fails under CI and is skipped elsewhere.
func Up(t testing.TB, n int, cfg Config) *Lab {
	t.Helper()
	testenv.RequireRoot(t)
	for _, cmd := range []string{"dockerd", "ip", "unshare"} {
		testenv.RequireCommand(t, cmd)
	}
	lab, err := newLab(n, cfg)
	if err != nil {
		t.Fatalf("swarmlab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Down(); err != nil {
			t.Errorf("swarmlab: teardown of %s: %v", lab.Name, err)
		}
	})
	start := time.Now()
	if err := lab.up(t.Logf); err != nil {
		t.Fatalf("swarmlab: bringing up %s: %v", lab.Name, err)
	}
	t.Logf("swarmlab: %s: %d dockerd nodes on %s up in %s", lab.Name, n, lab.Subnet, time.Since(start).Round(time.Millisecond))
	return lab
}

func newLab(n int, cfg Config) (*Lab, error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("%d nodes: want 1 to 200", n)
	}
	prefix, err := netip.ParsePrefix(cfg.Subnet)
	if err != nil || !prefix.Addr().Is4() {
		return nil, fmt.Errorf("subnet %q: want an IPv4 prefix such as 10.231.7.0/24", cfg.Subnet)
	}
	prefix = prefix.Masked()
	if cfg.Wait <= 0 {
		cfg.Wait = time.Minute
	}
	suffix := make([]byte, 3)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	name := "rvt" + hex.EncodeToString(suffix)
	l := &Lab{Name: name, Subnet: prefix, HostIP: nthAddr(prefix, 1), HostLink: name + "h", cfg: cfg,
		dir: filepath.Join(baseDir, name)}
	for i := 1; i <= n; i++ {
		ip := nthAddr(prefix, 10+i)
		if !prefix.Contains(ip) || ip == lastAddr(prefix) {
			return nil, fmt.Errorf("subnet %s is too small for %d nodes", prefix, n)
		}
		node := &Node{Index: i, Name: fmt.Sprintf("%s-n%d", name, i), IP: ip, lab: l}
		node.NetNS = node.Name
		node.Dir = filepath.Join(l.dir, fmt.Sprintf("n%d", i))
		node.Socket = filepath.Join(node.Dir, "docker.sock")
		l.Nodes = append(l.Nodes, node)
	}
	for i := 1; i <= cfg.Hosts; i++ {
		ip := nthAddr(prefix, 200+i)
		if !prefix.Contains(ip) || ip == lastAddr(prefix) {
			return nil, fmt.Errorf("subnet %s is too small for %d hosts", prefix, cfg.Hosts)
		}
		l.Hosts = append(l.Hosts, &Host{NetNS: fmt.Sprintf("%s-h%d", name, i), IP: ip})
	}
	return l, nil
}

// up creates the network and starts every dockerd, in parallel.
func (l *Lab) up(logf func(string, ...any)) error {
	if err := l.prepare(logf); err != nil {
		return err
	}
	errs := make(chan error, len(l.Nodes))
	for _, n := range l.Nodes {
		go func() { errs <- n.start() }()
	}
	var first error
	for range l.Nodes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Down stops every process of the lab and removes everything it created. It is safe to
// call more than once; Up's cleanup calls it. The error lists whatever could not be removed.
func (l *Lab) Down() error {
	l.downOnce.Do(func() {
		l.downErr = withLock(func() error { return teardown(l.manifest()) })
		for _, n := range l.Nodes {
			n.reap()
		}
	})
	return l.downErr
}

// DockerHost is the node's docker endpoint, for client.WithHost or `docker -H`.
func (n *Node) DockerHost() string { return "unix://" + n.Socket }

// Client returns a docker client for the node (API version negotiated: the engine may be
// older than the client). It is closed by t.Cleanup.
func (n *Node) Client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.NewClientWithOpts(client.WithHost(n.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("swarmlab: docker client for %s: %v", n.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Command prepares name with args to run inside the node's network namespace (as an agent
// on that machine would). Note that, as with any `ip netns exec`, it sees a fresh /sys
// without the cgroup mounts. A process still running when the lab goes down is killed.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NetNS, name}, args...)...)
}

// Log returns what the node's dockerd has logged so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "dockerd.log"))
	return string(b)
}

// nthAddr is the i-th address of p (i = 0 is the network address).
func nthAddr(p netip.Prefix, i int) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lastAddr is p's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	return nthAddr(p, 1<<(32-p.Bits())-1)
}
