package swarmlab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/client"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// privateDirs are paths dockerd 20.10 and containerd 1.6 use whatever --data-root and
// --exec-root say: a containerd.sock in /run/containerd would be used instead of a managed
// containerd, shims put sockets in /run/containerd/s, plugins are looked up in
// /run/docker/plugins, containerd's "opt" plugin writes /opt/containerd, and libnetwork
// writes /var/lib/docker/network/files. Each node gets a private tmpfs on all of them.
var privateDirs = []string{"/run/containerd", "/run/docker", "/opt/containerd", "/var/lib/docker"}

// nodeScript runs as `sh -c script HOSTNAME ETCDIR dockerd ARGS...` inside the node's
// network namespace and a private mount and UTS namespace, then becomes dockerd. Every
// mount it makes lives only in that mount namespace and vanishes with dockerd.
func nodeScript(cgroupMounts string) string {
	return `set -e
hostname "$0"
# dockerd 20.10 keeps its identity key in /etc/docker/key.json: one /etc/docker per node.
mount --bind "$1" /etc/docker
shift
# ip netns exec mounts a fresh /sys, which hides the host's cgroup mounts: remount them.
` + cgroupMounts + `
for m in ` + strings.Join(privateDirs, " ") + `; do mount -t tmpfs -o size=16m,mode=711 tmpfs "$m"; done
exec "$@"
`
}

// cgroupMounts returns shell lines that mount, under the fresh /sys, the same cgroup
// hierarchies the host has mounted under /sys/fs/cgroup (cgroup v1, v2, or both).
func cgroupMounts() (string, error) {
	controllers, err := knownControllers()
	if err != nil {
		return "", err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fld := range fields {
			if fld == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || len(fields) < sep+4 {
			continue
		}
		mnt, fstype, super := fields[4], fields[sep+1], fields[sep+3]
		if mnt != "/sys/fs/cgroup" && !strings.HasPrefix(mnt, "/sys/fs/cgroup/") {
			continue
		}
		switch {
		case mnt == "/sys/fs/cgroup" && fstype == "cgroup2": // a pure cgroup v2 host
			lines = append(lines, "mount -t cgroup2 cgroup2 /sys/fs/cgroup")
		case mnt == "/sys/fs/cgroup":
			lines = append(lines, "mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup")
		case fstype == "cgroup2":
			lines = append(lines, fmt.Sprintf("mkdir -p %s; mount -t cgroup2 cgroup2 %s", mnt, mnt))
		case fstype == "cgroup":
			// Mounting an existing v1 hierarchy again attaches to the same hierarchy; only
			// its controllers and name matter.
			var opts []string
			for _, o := range strings.Split(super, ",") {
				if controllers[o] || strings.HasPrefix(o, "name=") {
					opts = append(opts, o)
				}
			}
			if len(opts) == 1 && strings.HasPrefix(opts[0], "name=") {
				opts = append([]string{"none"}, opts...)
			}
			lines = append(lines, fmt.Sprintf("mkdir -p %s; mount -t cgroup -o %s cgroup %s", mnt, strings.Join(opts, ","), mnt))
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if len(lines) == 0 {
		return "", errors.New("no cgroup hierarchy is mounted under /sys/fs/cgroup")
	}
	return strings.Join(lines, "\n"), nil
}

func knownControllers() (map[string]bool, error) {
	b, err := os.ReadFile("/proc/cgroups")
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			out[f[0]] = true
		}
	}
	return out, nil
}

// start launches the node's dockerd and waits until its API answers.
func (n *Node) start() error {
	etc := filepath.Join(n.Dir, "etc-docker")
	for _, d := range []string{filepath.Join(n.Dir, "data"), filepath.Join(n.Dir, "exec"), etc} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		return err
	}
	args := []string{"netns", "exec", n.NetNS, "unshare", "--uts", "--mount", "/bin/sh", "-c", nodeScript(mounts),
		n.Name, etc,
		dockerd,
		"--data-root", filepath.Join(n.Dir, "data"),
		"--exec-root", filepath.Join(n.Dir, "exec"),
		"--pidfile", filepath.Join(n.Dir, "docker.pid"),
		"-H", n.DockerHost(),
		"--storage-driver", "overlay2",
		// Its own cgroup parent, so that teardown can find and remove its cgroups.
		"--cgroup-parent", "/" + n.Name,
		"--log-level", "warn",
	}
	args = append(args, n.lab.cfg.DockerdArgs...)
	log, err := os.OpenFile(filepath.Join(n.Dir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", args...)
	// Workers must not try to pull a service's image when it is there locally: the lab has
	// no registry and no route out.
	cmd.Env = append(os.Environ(), "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1")
	cmd.Stdout, cmd.Stderr = log, log
	// Every hop (ip, unshare, sh) exec()s, so this process is dockerd. Pdeathsig stops it
	// if the test binary dies without running its cleanups (a test timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	exited, err := testenv.StartTied(cmd, syscall.SIGTERM)
	if err != nil {
		log.Close()
		return fmt.Errorf("starting dockerd for %s: %w", n.Name, err)
	}
	done := make(chan struct{})
	go func() {
		<-exited
		log.Close()
		close(done)
	}()
	n.mu.Lock()
	n.proc, n.done = cmd, done
	n.mu.Unlock()
	return n.waitAPI(done)
}

// waitAPI polls the node's /_ping until it answers, dockerd exits or the wait is over.
func (n *Node) waitAPI(done <-chan struct{}) error {
	c, err := client.NewClientWithOpts(client.WithHost(n.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer c.Close()
	// An exited dockerd ends the wait at once: it will never answer.
	ctx, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	go func() {
		select {
		case <-done:
			stop(errDockerdExited)
		case <-ctx.Done():
		}
	}()
	err = testenv.Poll(ctx, n.lab.cfg.Wait, "dockerd of "+n.Name+" to answer /_ping", func() error {
		ping, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := c.Ping(ping)
		return err
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(context.Cause(ctx), errDockerdExited):
		return fmt.Errorf("dockerd of %s exited; its log:\n%s", n.Name, tail(n.Log(), 30))
	default:
		return fmt.Errorf("%w; its log:\n%s", err, tail(n.Log(), 30))
	}
}

var errDockerdExited = errors.New("dockerd exited")

// Restart stops the node's dockerd (SIGTERM, as systemd would) and starts it again with
// the same state, for tests of what a node finds after a reboot.
func (n *Node) Restart() error {
	if err := n.stop(syscall.SIGTERM); err != nil {
		return err
	}
	return n.start()
}

// PowerOff kills the node's dockerd and its containerd at once, as a power loss takes
// them. The lab's teardown copes with a node that is off.
func (n *Node) PowerOff() error { return n.stop(syscall.SIGKILL) }

// stop stops dockerd with sig (SIGKILL after 30 s) and then whatever it left running.
func (n *Node) stop(sig syscall.Signal) error {
	n.mu.Lock()
	proc, done := n.proc, n.done
	n.mu.Unlock()
	if proc != nil {
		_ = proc.Process.Signal(sig)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = proc.Process.Kill()
			<-done
		}
	}
	// containerd and shims outlive dockerd briefly; the new dockerd starts its own.
	return killAndWait(procsOf([]string{n.Dir + "/"}, nil, nil), 10*time.Second)
}

// reap waits for the node's dockerd to be reaped after teardown killed it.
func (n *Node) reap() {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
