// Package coordinatortest runs real `rivet coordinator` processes, on loopback or each in
// a network namespace of its own: a cluster of 1, 3 or 5 that tests and benches can kill,
// restart, grow and partition. It is used by the integration tests and by rivet-bench, so
// it reports errors instead of taking a *testing.T.
package coordinatortest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// Options configures a cluster.
type Options struct {
	Bin   string // path to the rivet binary
	Dir   string // working directory: one data dir per node, and logs
	Nodes int
	// Host is the IP every coordinator listens on and advertises (default 127.0.0.1).
	Host string
	// ExtraArgs are passed to every `rivet coordinator`.
	ExtraArgs []string
	// Place puts node i (0-based) in network namespace netns at address host, with the
	// default ports (the namespace is its own). Nil: every node on Host, on free ports.
	Place func(i int) (netns, host string)
	// Bridge, when set, makes a namespace for each node on a bridge of its own (root),
	// which Cut and Heal partition; Place and Host are then unused.
	Bridge *Bridge
	// Admit is the --admit policy (default shared.AdmitAuto: tests of everything but
	// admission want machines planned; admission tests ask for shared.AdmitExpected).
	Admit string
	// NormalElections leaves out --fast-elections. Fast elections make tests recover
	// quickly from a killed leader; on a loaded machine they also make a leader step down
	// when a heartbeat is late, which a bench without faults does not want.
	NormalElections bool
}

// Node is one coordinator process.
type Node struct {
	ID         string
	Netns      string // the network namespace it runs in; "" for the test's own
	Host       string // the address it listens on and advertises
	DataDir    string
	APIAddr    string
	RaftAddr   string
	GossipAddr string
	LogPath    string
	// Bin, when set, is the rivet binary this node runs from its next (re)start instead
	// of Options.Bin: an upgrade test swaps it between releases.
	Bin     string
	lanLink string // its veth's end on the bridge (Options.Bridge only)

	mu   sync.Mutex // cmd and done change on Restart while meters and pollers read them
	cmd  *exec.Cmd
	done chan struct{}
}

// URL is the node's API base URL.
func (n *Node) URL() string { return "https://" + n.APIAddr }

// Running reports whether the process is alive.
func (n *Node) Running() bool {
	cmd, done := n.process()
	return cmd != nil && alive(done)
}

// PID is the process id of the running coordinator, or 0.
func (n *Node) PID() int {
	cmd, done := n.process()
	if cmd == nil || !alive(done) {
		return 0
	}
	return cmd.Process.Pid
}

func (n *Node) process() (*exec.Cmd, chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd, n.done
}

func alive(done chan struct{}) bool {
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Cluster is a set of coordinator processes forming one Raft cluster.
type Cluster struct {
	opts        Options
	net         *bridgeNet // Options.Bridge once made
	mu          sync.Mutex
	Nodes       []*Node
	Fingerprint string
	AdminToken  string
	EnrolToken  string
}

// Start starts opts.Nodes coordinators: the first bootstraps, the rest join it. On error
// everything it started (and a Bridge's namespaces) is removed again.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Nodes < 1 {
		opts.Nodes = 1
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	c := &Cluster{opts: opts}
	if opts.Bridge != nil {
		var err error
		if c.net, err = newBridgeNet(*opts.Bridge); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if _, err := c.AddNode(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	for i := 1; i < opts.Nodes; i++ {
		if _, err := c.AddNode(ctx); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitVoters(ctx, opts.Nodes); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// AddNode starts one more coordinator; all but the first join the cluster.
func (c *Cluster) AddNode(ctx context.Context) (*Node, error) {
	c.mu.Lock()
	idx := len(c.Nodes)
	c.mu.Unlock()
	n := &Node{ID: fmt.Sprintf("c%d", idx+1), Host: c.opts.Host}
	ports := []int{7443, 7400, 7946}
	switch {
	case c.net != nil:
		if err := c.net.place(idx, n); err != nil {
			return nil, err
		}
	case c.opts.Place != nil:
		n.Netns, n.Host = c.opts.Place(idx)
	default:
		var err error
		if ports, err = FreePorts(c.opts.Host, 3); err != nil {
			return nil, err
		}
	}
	// Fixed ports, kept across restarts, as on real machines.
	n.APIAddr = net.JoinHostPort(n.Host, fmt.Sprint(ports[0]))
	n.RaftAddr = net.JoinHostPort(n.Host, fmt.Sprint(ports[1]))
	n.GossipAddr = net.JoinHostPort(n.Host, fmt.Sprint(ports[2]))
	n.DataDir = filepath.Join(c.opts.Dir, n.ID)
	n.LogPath = filepath.Join(c.opts.Dir, n.ID+".log")
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.Nodes = append(c.Nodes, n)
	c.mu.Unlock()
	if err := c.launch(n, idx > 0); err != nil {
		return nil, err
	}
	if idx == 0 {
		if err := c.readCredentials(ctx, n); err != nil {
			return nil, err
		}
	}
	return n, c.waitHealthy(ctx, n)
}

func (c *Cluster) launch(n *Node, join bool) error {
	args := []string{"coordinator", "--data-dir", n.DataDir, "--node-id", n.ID,
		"--api-addr", n.APIAddr, "--raft-addr", n.RaftAddr, "--advertise", n.Host,
		"--log-format", "json", "--gossip-addr", n.GossipAddr,
		"--admit", cmp.Or(c.opts.Admit, shared.AdmitAuto)}
	if !c.opts.NormalElections {
		args = append(args, "--fast-elections")
	}
	token := "" // the environment, not the command line, which every user sees in ps
	if join {
		args = append(args, "--join", strings.Join(c.URLs(), ","), "--ca-fingerprint", c.Fingerprint)
		token = c.AdminToken
	}
	args = append(args, c.opts.ExtraArgs...)
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	bin := cmp.Or(n.Bin, c.opts.Bin)
	name := bin
	if n.Netns != "" {
		// ip execs the coordinator in place: the pid, and Pdeathsig, stay the coordinator's.
		name, args = "ip", append([]string{"netns", "exec", n.Netns, bin}, args...)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "RIVET_TOKEN="+token, "RIVET_CA_FINGERPRINT=")
	// Its own process group, so a test that dies does not leave it to the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	exited, err := testenv.StartTied(cmd, syscall.SIGKILL)
	if err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	go func() {
		<-exited
		logf.Close()
		close(done)
	}()
	return nil
}

// readCredentials waits for the first node to write operator.env.
func (c *Cluster) readCredentials(ctx context.Context, n *Node) error {
	creds, err := waitCredentials(ctx, filepath.Join(n.DataDir, "operator.env"), 30*time.Second)
	if err != nil {
		return err
	}
	c.Fingerprint, c.AdminToken, c.EnrolToken = creds.CAFingerprint, creds.Token, creds.EnrolToken
	return nil
}

func (c *Cluster) waitHealthy(ctx context.Context, n *Node) error {
	cl := c.Client(n)
	return testenv.Poll(ctx, 90*time.Second, n.ID+" healthy with a leader", func() error {
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

// WaitVoters waits until the cluster reports want voters and a leader.
func (c *Cluster) WaitVoters(ctx context.Context, want int) error {
	return testenv.Poll(ctx, 60*time.Second, fmt.Sprintf("%d voters and a leader", want), func() error {
		m, err := c.Client().Members(ctx)
		if err != nil {
			return err
		}
		voters, leader := 0, false
		for _, p := range m.Raft {
			if p.Suffrage == "Voter" {
				voters++
			}
			leader = leader || p.Leader
		}
		if voters != want || !leader {
			return fmt.Errorf("%d voters (want %d), leader %v", voters, want, leader)
		}
		return nil
	})
}

// URLs returns the API URLs of the running nodes.
func (c *Cluster) URLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var urls []string
	for _, n := range c.Nodes {
		if n.Running() {
			urls = append(urls, n.URL())
		}
	}
	return urls
}

// Client returns an admin client for the given nodes (all running nodes when none).
func (c *Cluster) Client(nodes ...*Node) *shared.Client {
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
		panic(err) // only on a malformed URL or fingerprint, which Start made
	}
	return cl
}

// Leader returns the node that leads, as the cluster reports it.
func (c *Cluster) Leader(ctx context.Context) (*Node, error) {
	var leader *Node
	err := testenv.Poll(ctx, 60*time.Second, "a leader", func() error {
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
func (c *Cluster) Kill(n *Node) {
	if cmd, done := n.process(); cmd != nil && alive(done) {
		_ = cmd.Process.Kill()
		<-done
	}
}

// Terminate stops a node as an operator's `systemctl stop` does: SIGTERM, then SIGKILL
// if it has not exited within grace. It reports whether the node exited by itself.
func (c *Cluster) Terminate(n *Node, grace time.Duration) bool {
	cmd, done := n.process()
	if cmd == nil || !alive(done) {
		return true
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(grace):
		c.Kill(n)
		return false
	}
}

// Restart starts a stopped node again with its data dir (it rejoins by its Raft state).
func (c *Cluster) Restart(ctx context.Context, n *Node) error {
	if n.Running() {
		return fmt.Errorf("%s is running", n.ID)
	}
	if err := c.launch(n, false); err != nil {
		return err
	}
	return nil
}

// WaitHealthy waits for a node to answer health with a leader.
func (c *Cluster) WaitHealthy(ctx context.Context, n *Node) error { return c.waitHealthy(ctx, n) }

// Stop kills every node and removes the namespaces and links of a Bridge; it is safe to
// call more than once and after a failed start.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		c.Kill(n)
	}
	if c.net != nil {
		c.net.release()
	}
}

// Bridged reports whether the nodes run on a Bridge (and can be Cut).
func (c *Cluster) Bridged() bool { return c.net != nil }

// HostIP is the address the host reaches every coordinator from, and simulated machines
// use: the host's end of the Bridge, or Host.
func (c *Cluster) HostIP() string {
	if c.net != nil {
		return c.net.hostIP()
	}
	return c.opts.Host
}

// Cut takes node n off the coordinators' bridge: a partition with n alone on its side.
// Machines (and the harness) still reach it over its own link.
func (c *Cluster) Cut(n *Node) error {
	if c.net == nil {
		return errors.New("a partition needs the coordinators on a Bridge (network namespaces, root)")
	}
	return c.net.setLink(n, "down")
}

// Heal puts node n back on the bridge.
func (c *Cluster) Heal(n *Node) error {
	if c.net == nil {
		return nil
	}
	return c.net.setLink(n, "up")
}

// Leftovers lists the Bridge's namespaces and links that still exist (after Stop: none).
func (c *Cluster) Leftovers() []string {
	if c.net == nil {
		return nil
	}
	return c.net.leftovers()
}

// Logs returns the concatenated logs of every node (for greps in tests).
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		data, _ := os.ReadFile(n.LogPath)
		b.Write(data)
	}
	return b.String()
}

// FreePorts returns n TCP ports on host that were free a moment ago, all different.
func FreePorts(host string, n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
