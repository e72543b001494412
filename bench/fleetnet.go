package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/internal/netclaim"
	"github.com/rivetmetal/rivet/shared"
)

// FleetClusterOptions configures the coordinators of a fleet run.
type FleetClusterOptions struct {
	Bin   string // the rivet binary
	Dir   string // data dirs and logs
	Nodes int
	// Netns puts every coordinator in its own network namespace on a bridge (root only),
	// so that one can be cut off (Cut) and healed. Without it they share loopback.
	Netns bool
	// Subnet is the /24 of the bridge, e.g. "10.232.100": the host gets .1, coordinator
	// i gets .(10+i).
	Subnet string
	// Prefix starts every namespace and link name (default "rvtf").
	Prefix string
	// FastElections shortens Raft's timeouts (quick recovery in fault runs); on a loaded
	// machine it also makes leaders step down when a heartbeat is late.
	FastElections bool
	ExtraArgs     []string
}

// FleetNode is one coordinator process.
type FleetNode struct {
	ID, IP, NS string
	DataDir    string
	LogPath    string
	APIAddr    string
	RaftAddr   string
	GossipAddr string
	lanLink    string // its veth's end on the bridge (netns only)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// URL is the node's API base URL.
func (n *FleetNode) URL() string { return "https://" + n.APIAddr }

// Running reports whether the process is alive.
func (n *FleetNode) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// PID is the process id of the running coordinator (0 when it is not running).
func (n *FleetNode) PID() int {
	if !n.Running() {
		return 0
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd.Process.Pid
}

// FleetCluster is a Raft cluster of real `rivet coordinator` processes, on loopback or
// each in its own network namespace.
type FleetCluster struct {
	opts        FleetClusterOptions
	tag         string
	lan         string // namespace holding the bridge
	hostLink    string
	claim       *netclaim.Claim // the namespaces and links made, for Close or the next run
	Nodes       []*FleetNode
	Fingerprint string
	AdminToken  string
	EnrolToken  string
}

// StartFleetCluster starts opts.Nodes coordinators (the first bootstraps, the others
// join) and waits for all of them to be voters. On error everything started is removed.
func StartFleetCluster(ctx context.Context, opts FleetClusterOptions) (*FleetCluster, error) {
	if opts.Nodes < 1 {
		opts.Nodes = 1
	}
	if opts.Prefix == "" {
		opts.Prefix = "rvtf"
	}
	if opts.Subnet == "" {
		opts.Subnet = "10.232.101"
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	c := &FleetCluster{opts: opts, tag: hex.EncodeToString(b)}
	if err := c.start(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *FleetCluster) start(ctx context.Context) error {
	if c.opts.Netns {
		if err := c.bridge(); err != nil {
			return err
		}
	}
	for i := range c.opts.Nodes {
		n, err := c.node(i)
		if err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
		if err := c.launch(n, i > 0); err != nil {
			return err
		}
		if i == 0 {
			if err := c.readCredentials(ctx, n); err != nil {
				return err
			}
		}
		if err := c.WaitHealthy(ctx, n); err != nil {
			return err
		}
	}
	return c.waitVoters(ctx, c.opts.Nodes)
}

// HostIP is the address simulated machines use: the host's end of the bridge, or loopback.
func (c *FleetCluster) HostIP() string {
	if c.opts.Netns {
		return c.opts.Subnet + ".1"
	}
	return "127.0.0.1"
}

// bridge creates the LAN: a bridge in its own namespace and a veth from the host.
func (c *FleetCluster) bridge() error {
	c.lan = c.opts.Prefix + c.tag + "l"
	c.hostLink = c.opts.Prefix + c.tag + "h"
	claim, swept, err := netclaim.New(c.opts.Prefix + c.tag)
	for _, line := range swept {
		slog.Info("netclaim: " + line)
	}
	if err != nil {
		return fmt.Errorf("recording the namespaces: %w", err)
	}
	c.claim = claim
	if holder, err := netclaim.AddressHolder(c.HostIP()); err != nil || holder != "" {
		return fmt.Errorf("%s is already on host link %q (%v): choose another subnet or remove the leftover with `ip link del %s`",
			c.HostIP(), holder, err, holder)
	}
	if err := errors.Join(claim.Namespace(c.lan), claim.Link(c.hostLink)); err != nil {
		return fmt.Errorf("recording the namespaces: %w", err)
	}
	return ipAll(
		[]string{"netns", "add", c.lan},
		[]string{"-n", c.lan, "link", "set", "lo", "up"},
		[]string{"-n", c.lan, "link", "add", "br0", "type", "bridge"},
		[]string{"-n", c.lan, "link", "set", "br0", "up"},
		[]string{"link", "add", c.hostLink, "type", "veth", "peer", "name", "up0", "netns", c.lan},
		[]string{"-n", c.lan, "link", "set", "up0", "master", "br0", "up"},
		[]string{"addr", "add", c.HostIP() + "/24", "dev", c.hostLink},
		[]string{"link", "set", c.hostLink, "up"},
	)
}

// node prepares coordinator i: its namespace and addresses, or free loopback ports.
func (c *FleetCluster) node(i int) (*FleetNode, error) {
	n := &FleetNode{ID: fmt.Sprintf("c%d", i+1)}
	n.DataDir = filepath.Join(c.opts.Dir, n.ID)
	n.LogPath = filepath.Join(c.opts.Dir, n.ID+".log")
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return nil, err
	}
	if !c.opts.Netns {
		ports, err := freeTCPPorts(3)
		if err != nil {
			return nil, err
		}
		n.IP = "127.0.0.1"
		n.APIAddr, n.RaftAddr, n.GossipAddr = fmt.Sprintf("127.0.0.1:%d", ports[0]),
			fmt.Sprintf("127.0.0.1:%d", ports[1]), fmt.Sprintf("127.0.0.1:%d", ports[2])
		return n, nil
	}
	n.IP = fmt.Sprintf("%s.%d", c.opts.Subnet, 10+i+1)
	n.NS = fmt.Sprintf("%s%s%s", c.opts.Prefix, c.tag, n.ID)
	n.lanLink = n.ID
	n.APIAddr, n.RaftAddr, n.GossipAddr = n.IP+":7443", n.IP+":7400", n.IP+":7946"
	// Two links: eth0 on the bridge carries coordinator-to-coordinator traffic (Raft,
	// forwarding, gossip); a point-to-point veth to the host carries the machines' and the
	// harness's traffic. Cutting eth0 partitions the coordinators while the machines still
	// reach both sides, as when a switch between racks fails.
	p2p := fmt.Sprintf("%s%sp%d", c.opts.Prefix, c.tag, i+1)
	if err := errors.Join(c.claim.Namespace(n.NS), c.claim.Link(p2p)); err != nil {
		return nil, fmt.Errorf("recording the namespaces: %w", err)
	}
	return n, ipAll(
		[]string{"netns", "add", n.NS},
		[]string{"-n", n.NS, "link", "set", "lo", "up"},
		[]string{"-n", n.NS, "link", "add", "eth0", "type", "veth", "peer", "name", n.lanLink, "netns", c.lan},
		[]string{"-n", c.lan, "link", "set", n.lanLink, "master", "br0", "up"},
		[]string{"-n", n.NS, "addr", "add", n.IP + "/24", "dev", "eth0"},
		[]string{"-n", n.NS, "link", "set", "eth0", "up"},
		[]string{"link", "add", p2p, "type", "veth", "peer", "name", "h0", "netns", n.NS},
		[]string{"link", "set", p2p, "up"},
		[]string{"-n", n.NS, "link", "set", "h0", "up"},
		[]string{"route", "add", n.IP + "/32", "dev", p2p, "src", c.HostIP()},
		[]string{"-n", n.NS, "route", "add", c.HostIP() + "/32", "dev", "h0", "src", n.IP},
	)
}

func (c *FleetCluster) launch(n *FleetNode, join bool) error {
	args := []string{"coordinator", "--data-dir", n.DataDir, "--node-id", n.ID,
		"--api-addr", n.APIAddr, "--raft-addr", n.RaftAddr, "--advertise", n.IP,
		"--log-format", "json", "--gossip-addr", n.GossipAddr, "--admit", "auto",
		// The simulated fleet shares one enrolment token; a real fleet network-boots with a
		// ticket each (limited per source address).
		"--register-rate", "0"}
	if c.opts.FastElections {
		args = append(args, "--fast-elections")
	}
	token := "" // the environment, not the command line, which every user sees in ps
	if join {
		args = append(args, "--join", c.Nodes[0].URL(), "--ca-fingerprint", c.Fingerprint)
		token = c.AdminToken
	}
	args = append(args, c.opts.ExtraArgs...)
	name := c.opts.Bin
	if n.NS != "" {
		// ip execs the coordinator in place: the pid stays the coordinator's.
		name, args = "ip", append([]string{"netns", "exec", n.NS, c.opts.Bin}, args...)
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "RIVET_TOKEN="+token, "RIVET_CA_FINGERPRINT=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return nil
}

func (c *FleetCluster) readCredentials(ctx context.Context, n *FleetNode) error {
	path := filepath.Join(n.DataDir, "operator.env")
	return pollUntil(ctx, 30*time.Second, func() error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), "=")
			switch k {
			case "RIVET_CA_FINGERPRINT":
				c.Fingerprint = v
			case "RIVET_TOKEN":
				c.AdminToken = v
			case "RIVET_ENROL_TOKEN":
				c.EnrolToken = v
			}
		}
		if c.Fingerprint == "" || c.AdminToken == "" || c.EnrolToken == "" {
			return errors.New("operator.env not complete yet")
		}
		return nil
	})
}

// URLs lists every coordinator's API URL in node order, as agents get them (rivet.url).
func (c *FleetCluster) URLs() []string {
	var urls []string
	for _, n := range c.Nodes {
		urls = append(urls, n.URL())
	}
	return urls
}

// Client is an admin client for the given nodes (every node when none is given).
func (c *FleetCluster) Client(nodes ...*FleetNode) *shared.Client {
	urls := c.URLs()
	if len(nodes) > 0 {
		urls = nil
		for _, n := range nodes {
			urls = append(urls, n.URL())
		}
	}
	cl, err := shared.NewClient(shared.ClientConfig{URLs: urls, CAFingerprint: c.Fingerprint,
		Token: c.AdminToken, Timeout: 20 * time.Second})
	if err != nil {
		panic(err) // only on a malformed URL or fingerprint, which start made
	}
	return cl
}

// WaitHealthy waits until node n answers health with a leader.
func (c *FleetCluster) WaitHealthy(ctx context.Context, n *FleetNode) error {
	cl := c.Client(n)
	return pollUntil(ctx, 90*time.Second, func() error {
		if !n.Running() {
			return fmt.Errorf("%s exited; see %s", n.ID, n.LogPath)
		}
		h, err := cl.Health(ctx)
		if err != nil {
			return err
		}
		if h.Status != "ok" {
			return fmt.Errorf("%s is %s", n.ID, h.Status)
		}
		return nil
	})
}

func (c *FleetCluster) waitVoters(ctx context.Context, want int) error {
	return pollUntil(ctx, 60*time.Second, func() error {
		m, err := c.Client().Members(ctx)
		if err != nil {
			return err
		}
		voters := 0
		for _, p := range m.Raft {
			if p.Suffrage == "Voter" {
				voters++
			}
		}
		if voters != want {
			return fmt.Errorf("%d voters, want %d", voters, want)
		}
		return nil
	})
}

// Leader returns the node that reports itself leader.
func (c *FleetCluster) Leader(ctx context.Context) (*FleetNode, error) {
	var leader *FleetNode
	err := pollUntil(ctx, 60*time.Second, func() error {
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			h, err := c.Client(n).Health(ctx)
			if err == nil && h.RaftState == "Leader" {
				leader = n
				return nil
			}
		}
		return errors.New("no leader yet")
	})
	return leader, err
}

// Kill sends SIGKILL to a node and waits for it to exit.
func (c *FleetCluster) Kill(n *FleetNode) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts a stopped node again on its data dir.
func (c *FleetCluster) Restart(n *FleetNode) error {
	if n.Running() {
		return fmt.Errorf("%s is running", n.ID)
	}
	return c.launch(n, false)
}

// Cut takes node n off the coordinators' bridge: a partition with n alone on its side.
// Machines (and the harness) still reach it over its own link.
func (c *FleetCluster) Cut(n *FleetNode) error {
	if n.lanLink == "" {
		return errors.New("a partition needs the coordinators in network namespaces (--netns, root)")
	}
	return ipAll([]string{"-n", c.lan, "link", "set", n.lanLink, "down"})
}

// Heal puts node n back on the bridge.
func (c *FleetCluster) Heal(n *FleetNode) error {
	if n.lanLink == "" {
		return nil
	}
	return ipAll([]string{"-n", c.lan, "link", "set", n.lanLink, "up"})
}

// Close kills every coordinator and removes the namespaces and links it made; it is safe
// to call more than once and after a failed start.
func (c *FleetCluster) Close() {
	for _, n := range c.Nodes {
		c.Kill(n)
	}
	if c.claim != nil {
		if err := c.claim.Release(); err != nil {
			slog.Warn("removing the fleet's namespaces", "err", err)
		}
		c.claim = nil
	}
}

// Leftovers lists namespaces and links of this cluster that still exist (for tests).
func (c *FleetCluster) Leftovers() []string {
	var left []string
	for _, args := range [][]string{{"netns", "list"}, {"-br", "link"}} {
		out, _ := exec.Command("ip", args...).Output()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, c.opts.Prefix+c.tag) {
				left = append(left, strings.Fields(line)[0])
			}
		}
	}
	return left
}

func ipAll(cmds ...[]string) error {
	for _, args := range cmds {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// pollUntil runs fn until it succeeds, ctx ends, or timeout passes.
func pollUntil(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
