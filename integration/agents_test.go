package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// agentProc is one service-mode rivet-agent running in its own network namespace.
type agentProc struct {
	ns, ip, uuid, stateDir, logPath string
	cmd                             *exec.Cmd
	done                            chan struct{}
}

func startAgent(t *testing.T, a *agentProc, c *coordinatortest.Cluster) {
	t.Helper()
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", a.ns, bin("rivet-agent"), "run", "--mode", "service",
		"--config", filepath.Join(a.stateDir, "none.yaml"),
		"--server", c.Nodes[0].URL(), "--ca-fingerprint", c.Fingerprint, "--token", c.EnrolToken,
		"--state-dir", a.stateDir, "--system-uuid", a.uuid, "--gossip-bind", a.ip+":7946",
		"--metrics-addr", "off", "--poll-interval", "5s", "--log-format", "json")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	exited, err := testenv.StartTied(cmd, syscall.SIGKILL)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd, a.done = cmd, make(chan struct{})
	go func() { <-exited; logf.Close(); close(a.done) }()
}

func (a *agentProc) kill() {
	if a.cmd == nil {
		return
	}
	select {
	case <-a.done:
	default:
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// TestTwentyAgentsRegisterGossipAndComeBack is issue 3's proof: 20 service-mode agents,
// each in its own namespace, register with their inventory and show as alive Serf
// members; three killed agents are marked lost; restarted, they are alive again with the
// same machine ids and no duplicate records.
func TestTwentyAgentsRegisterGossipAndComeBack(t *testing.T) {
	testenvLong(t)
	lab := newNetLab(t, "10.232.50")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cluster := startCluster(ctx, t, coordinatortest.Options{Dir: filepath.Join(dir, "coord"), Nodes: 1, Host: lab.HostIP})
	const n = 20
	agents := make([]*agentProc, n)
	t.Cleanup(func() {
		for _, a := range agents {
			if a != nil {
				a.kill()
			}
		}
		if t.Failed() {
			data, _ := os.ReadFile(agents[0].logPath)
			t.Logf("agent 0 log:\n%s\ncoordinator log:\n%s", tail(string(data), 4000), tail(cluster.Logs(), 4000))
		}
	})
	start := time.Now()
	for i := range agents {
		ns, ip := lab.AddHost(i)
		a := &agentProc{ns: ns, ip: ip, uuid: fmt.Sprintf("7e570000-0000-4000-8000-%012d", i),
			stateDir: filepath.Join(dir, fmt.Sprintf("agent%d", i)), logPath: filepath.Join(dir, fmt.Sprintf("agent%d.log", i))}
		if err := os.MkdirAll(a.stateDir, 0o700); err != nil {
			t.Fatal(err)
		}
		// An empty config file of our own: the host's /etc/rivet/agent.yaml must not leak in.
		if err := os.WriteFile(filepath.Join(a.stateDir, "none.yaml"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		agents[i] = a
		startAgent(t, a, cluster)
	}
	admin := cluster.Client()
	var ids map[string]shared.MachineID
	testenv.Eventually(t, 3*time.Minute, "20 machines registered and alive in gossip", func() (err error) {
		ids, err = registeredAndAlive(ctx, admin, agents, n)
		return err
	})
	t.Logf("20 agents registered and alive in %.1fs", time.Since(start).Seconds())
	for ip, id := range ids {
		m, err := admin.Machine(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if m.Inventory == nil || m.Inventory.CPU.Model == "" || m.Inventory.Memory.TotalBytes == 0 {
			t.Fatalf("machine %s (%s) registered without an inventory", id, ip)
		}
	}

	killed := agents[:3]
	killedAt := time.Now()
	for _, a := range killed {
		a.kill()
	}
	testenv.Eventually(t, 2*time.Minute, "the three killed agents marked lost", func() error {
		for _, a := range killed {
			m, err := admin.Machine(ctx, ids[a.ip])
			if err != nil {
				return err
			}
			if m.State != shared.StateLost {
				return fmt.Errorf("%s is %s", m.ID, m.State)
			}
		}
		return nil
	})
	fmt.Printf("rivet-figure: gossip lost_detection_s=%.1f agents=%d killed=3\n", time.Since(killedAt).Seconds(), n)

	for _, a := range killed {
		startAgent(t, a, cluster)
	}
	var again map[string]shared.MachineID
	testenv.Eventually(t, 2*time.Minute, "the restarted agents alive again", func() error {
		got, err := registeredAndAlive(ctx, admin, agents, n)
		if err != nil {
			return err
		}
		for _, a := range killed {
			m, err := admin.Machine(ctx, got[a.ip])
			if err != nil {
				return err
			}
			if m.State == shared.StateLost {
				return fmt.Errorf("%s still lost", m.ID)
			}
		}
		again = got
		return nil
	})
	for ip, id := range ids {
		if again[ip] != id {
			t.Fatalf("agent at %s came back as %s, was %s", ip, again[ip], id)
		}
	}
	ms, err := admin.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != n {
		t.Fatalf("%d machine records after the restarts, want %d (no duplicates)", len(ms), n)
	}
}

// registeredAndAlive maps each agent's IP to its machine id once all n registered and
// gossip shows every one alive.
func registeredAndAlive(ctx context.Context, admin *shared.Client, agents []*agentProc, n int) (map[string]shared.MachineID, error) {
	ms, err := admin.Machines(ctx)
	if err != nil {
		return nil, err
	}
	byAddr := map[string]shared.MachineID{}
	for _, m := range ms {
		byAddr[m.Addr] = m.ID
	}
	members, err := admin.Members(ctx)
	if err != nil {
		return nil, err
	}
	alive := map[shared.MachineID]bool{}
	for _, s := range members.Serf {
		if s.Status == "alive" && s.Tags.Kind == shared.KindAgent {
			alive[s.Tags.MachineID] = true
		}
	}
	out := map[string]shared.MachineID{}
	for _, a := range agents {
		id, ok := byAddr[a.ip]
		if !ok {
			return nil, fmt.Errorf("no machine registered from %s", a.ip)
		}
		if !alive[id] {
			return nil, fmt.Errorf("%s (%s) not alive in gossip", id, a.ip)
		}
		out[a.ip] = id
	}
	if len(out) != n {
		return nil, fmt.Errorf("%d of %d", len(out), n)
	}
	return out, nil
}
