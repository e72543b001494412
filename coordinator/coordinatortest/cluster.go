// Package coordinatortest runs real `rivet coordinator` processes on loopback: a cluster
// of 1, 3 or 5 that tests and benches can kill, restart and grow. It is used by the
// integration tests and by `rivet bench`, so it reports errors instead of taking a
// *testing.T.
package coordinatortest

import (
	"bufio"
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
	// Admit is the --admit policy (default shared.AdmitAuto: tests of everything but
	// admission want machines planned; admission tests ask for shared.AdmitExpected).
	Admit string
}

// Node is one coordinator process.
type Node struct {
	ID         string
	DataDir    string
	APIAddr    string
	RaftAddr   string
	GossipAddr string
	LogPath    string
	cmd        *exec.Cmd
	done       chan struct{}
}

// URL is the node's API base URL.
func (n *Node) URL() string { return "https://" + n.APIAddr }

// Running reports whether the process is alive.
func (n *Node) Running() bool {
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

// PID is the process id of the running coordinator, or 0.
func (n *Node) PID() int {
	if !n.Running() {
		return 0
	}
	return n.cmd.Process.Pid
}

// Cluster is a set of coordinator processes forming one Raft cluster.
type Cluster struct {
	opts        Options
	mu          sync.Mutex
	Nodes       []*Node
	Fingerprint string
	AdminToken  string
	EnrolToken  string
}

// Start starts opts.Nodes coordinators: the first bootstraps, the rest join it.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Nodes < 1 {
		opts.Nodes = 1
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	c := &Cluster{opts: opts}
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
	return c, c.WaitVoters(ctx, opts.Nodes)
}

// AddNode starts one more coordinator; all but the first join the cluster.
func (c *Cluster) AddNode(ctx context.Context) (*Node, error) {
	c.mu.Lock()
	idx := len(c.Nodes)
	c.mu.Unlock()
	ports, err := freePorts(c.opts.Host, 3)
	if err != nil {
		return nil, err
	}
	// Fixed ports, kept across restarts, as on real machines.
	n := &Node{ID: fmt.Sprintf("c%d", idx+1),
		APIAddr:    net.JoinHostPort(c.opts.Host, fmt.Sprint(ports[0])),
		RaftAddr:   net.JoinHostPort(c.opts.Host, fmt.Sprint(ports[1])),
		GossipAddr: net.JoinHostPort(c.opts.Host, fmt.Sprint(ports[2]))}
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
		"--api-addr", n.APIAddr, "--raft-addr", n.RaftAddr, "--advertise", c.opts.Host,
		"--fast-elections", "--log-format", "json", "--gossip-addr", n.GossipAddr,
		"--admit", cmp.Or(c.opts.Admit, shared.AdmitAuto)}
	if join {
		args = append(args, "--join", strings.Join(c.URLs(), ","), "--token", c.AdminToken,
			"--ca-fingerprint", c.Fingerprint)
	}
	args = append(args, c.opts.ExtraArgs...)
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.opts.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "RIVET_TOKEN=", "RIVET_CA_FINGERPRINT=")
	// Its own process group, so a test that dies does not leave it to the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", c.opts.Bin, err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(n.done)
	}()
	return nil
}

// readCredentials waits for the first node to write operator.env.
func (c *Cluster) readCredentials(ctx context.Context, n *Node) error {
	path := filepath.Join(n.DataDir, "operator.env")
	return poll(ctx, 30*time.Second, func() error {
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
		if c.Fingerprint == "" || c.AdminToken == "" {
			return errors.New("operator.env not complete yet")
		}
		return nil
	})
}

func (c *Cluster) waitHealthy(ctx context.Context, n *Node) error {
	cl := c.Client(n)
	return poll(ctx, 60*time.Second, func() error {
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
	return poll(ctx, 60*time.Second, func() error {
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
	err := poll(ctx, 30*time.Second, func() error {
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
	if n.Running() {
		_ = n.cmd.Process.Kill()
		<-n.done
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

// Stop kills every node.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		c.Kill(n)
	}
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

func freePorts(host string, n int) ([]int, error) {
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

// poll runs fn until it succeeds, ctx ends, or the timeout passes.
func poll(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = fn(); err == nil {
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
