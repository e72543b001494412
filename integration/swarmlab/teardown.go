package swarmlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/internal/netclaim"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// manifest names everything a lab creates, so that teardown (also of a lab whose test
// binary was killed) can find it all. It is written before anything is created.
type manifest struct {
	Name       string   `json:"name"`
	Dir        string   `json:"dir"`
	OwnerPID   int      `json:"owner_pid"`
	OwnerStart string   `json:"owner_start"` // the owner's start time: tells a reused pid apart
	NetNS      []string `json:"netns"`
	Cgroups    []string `json:"cgroups"` // cgroup parents, one per node
	HostLink   string   `json:"host_link"`
}

const (
	manifestFile = "manifest.json"
	// createdFile (in baseDir) lists the host directories labs had to create as mount
	// points; the last lab to go removes them.
	createdFile = "created-dirs.json"
)

func (l *Lab) manifest() manifest {
	m := manifest{Name: l.Name, Dir: l.dir, OwnerPID: os.Getpid(), OwnerStart: netclaim.ProcessStart(os.Getpid()),
		NetNS: []string{l.lanNS()}, HostLink: l.HostLink}
	for _, n := range l.Nodes {
		m.NetNS = append(m.NetNS, n.NetNS)
		m.Cgroups = append(m.Cgroups, n.Name)
	}
	for _, h := range l.Hosts {
		m.NetNS = append(m.NetNS, h.NetNS)
	}
	return m
}

// withLock runs fn holding the machine-wide swarmlab lock (a flock on baseDir), which
// serialises setup and teardown of labs in every test process.
func withLock(fn func() error) error {
	if err := os.MkdirAll(baseDir, 0o755); err != nil {
		return err
	}
	f, err := os.Open(baseDir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", baseDir, err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// prepare, under the lock: removes labs of dead test processes, records this lab, makes
// the mount points the nodes need and builds the network.
func (l *Lab) prepare(logf func(string, ...any)) error {
	return withLock(func() error {
		sweep(logf)
		if err := os.MkdirAll(l.dir, 0o755); err != nil {
			return err
		}
		b, _ := json.Marshal(l.manifest())
		if err := os.WriteFile(filepath.Join(l.dir, manifestFile), b, 0o644); err != nil {
			return err
		}
		if err := ensureDirs(append([]string{"/etc/docker", "/etc/netns"}, privateDirs...)); err != nil {
			return err
		}
		return l.network()
	})
}

// sweep tears down labs whose test process is gone.
func sweep(logf func(string, ...any)) {
	entries, _ := os.ReadDir(baseDir)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		m, err := readManifest(filepath.Join(baseDir, e.Name()))
		if err != nil || netclaim.ProcessStart(m.OwnerPID) == m.OwnerStart {
			continue
		}
		err = teardown(m)
		logf("swarmlab: removed lab %s left behind by dead test process %d: %v", m.Name, m.OwnerPID, err)
	}
}

func readManifest(dir string) (manifest, error) {
	var m manifest
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err == nil && (m.Name == "" || m.Dir != dir) {
		err = errors.New("bad manifest")
	}
	return m, err
}

// ensureDirs creates the missing ones of dirs and records them in createdFile.
func ensureDirs(dirs []string) error {
	created := readCreated()
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		created = append(created, d)
	}
	b, _ := json.Marshal(created)
	return os.WriteFile(filepath.Join(baseDir, createdFile), b, 0o644)
}

func readCreated() []string {
	var created []string
	b, err := os.ReadFile(filepath.Join(baseDir, createdFile))
	if err == nil {
		_ = json.Unmarshal(b, &created)
	}
	return created
}

// teardown removes everything m names and returns what it could not remove. Called under
// the lock.
func teardown(m manifest) error {
	nsInodes := netnsInodes(m.NetNS)
	stopProcesses(m, nsInodes)
	for _, ns := range m.NetNS {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			_ = ip("netns", "del", ns)
		}
		_ = os.RemoveAll(filepath.Join("/etc/netns", ns))
	}
	if linkExists(m.HostLink) {
		_ = ip("link", "del", m.HostLink)
	}
	// The kernel destroys namespaces, and the veths in them, asynchronously. A link still
	// there at the end is reported by leftovers.
	_ = testenv.Poll(context.Background(), 10*time.Second, "the host link removed",
		testenv.Holds(func() bool { return !linkExists(m.HostLink) }, nil))
	for _, dir := range cgroupDirs(m.Cgroups) {
		removeCgroup(dir)
	}
	_ = os.RemoveAll(m.Dir)
	removeCreatedDirs()
	return leftovers(m, nsInodes)
}

// stopProcesses stops dockerd with SIGTERM (it stops its containers), then kills whatever
// of the lab is left: processes that name the lab's directory (containerd, shims), run in
// its network namespaces (anything started with Node.Command) or in its cgroups
// (containers).
func stopProcesses(m manifest, nsInodes map[uint64]bool) {
	procs := procsOf([]string{m.Dir + "/"}, nsInodes, m.Cgroups)
	var dockerds []int
	for _, p := range procs {
		if p.exe == "dockerd" {
			dockerds = append(dockerds, p.pid)
			_ = syscall.Kill(p.pid, syscall.SIGTERM)
		}
	}
	// Whatever dockerd leaves running after its grace is killed next.
	_ = testenv.Poll(context.Background(), 20*time.Second, "dockerd to stop",
		testenv.Holds(func() bool { return !slices.ContainsFunc(dockerds, alive) }, nil))
	_ = killAndWait(procsOf([]string{m.Dir + "/"}, nsInodes, m.Cgroups), 10*time.Second)
}

type proc struct {
	pid int
	exe string // base name of argv[0]
}

// procsOf finds processes whose command line contains one of args, whose network
// namespace is one of nsInodes, or whose cgroup is (under) one of cgroups.
func procsOf(args []string, nsInodes map[uint64]bool, cgroups []string) []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !alive(pid) {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		exe, _, _ := strings.Cut(string(cmdline), "\x00")
		p := proc{pid: pid, exe: filepath.Base(exe)}
		switch {
		case slices.ContainsFunc(args, func(a string) bool { return strings.Contains(string(cmdline), a) }):
		case inNetNS(dir, nsInodes):
		case inCgroups(dir, cgroups):
		default:
			continue
		}
		out = append(out, p)
	}
	return out
}

func inNetNS(procDir string, nsInodes map[uint64]bool) bool {
	var st syscall.Stat_t
	return len(nsInodes) > 0 && syscall.Stat(filepath.Join(procDir, "ns", "net"), &st) == nil && nsInodes[st.Ino]
}

func inCgroups(procDir string, cgroups []string) bool {
	b, err := os.ReadFile(filepath.Join(procDir, "cgroup"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, cg := range cgroups {
			if parts[2] == "/"+cg || strings.HasPrefix(parts[2], "/"+cg+"/") {
				return true
			}
		}
	}
	return false
}

// killAndWait sends SIGKILL to procs and waits until they are gone.
func killAndWait(procs []proc, wait time.Duration) error {
	for _, p := range procs {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	return testenv.Poll(context.Background(), wait, "SIGKILLed processes to be gone", func() error {
		if left := slices.DeleteFunc(slices.Clone(procs), func(p proc) bool { return !alive(p.pid) }); len(left) > 0 {
			return fmt.Errorf("still running: %v", left)
		}
		return nil
	})
}

// alive reports whether pid runs (a zombie waiting for its parent does not count).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

func netnsInodes(names []string) map[uint64]bool {
	out := map[uint64]bool{}
	for _, ns := range names {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/run/netns", ns), &st) == nil {
			out[st.Ino] = true
		}
	}
	return out
}

func linkExists(name string) bool {
	_, err := os.Lstat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// cgroupDirs lists the lab's cgroup parents in every cgroup hierarchy the host mounts.
func cgroupDirs(cgroups []string) []string {
	var out []string
	for _, root := range cgroupRoots() {
		for _, cg := range cgroups {
			if _, err := os.Stat(filepath.Join(root, cg)); err == nil {
				out = append(out, filepath.Join(root, cg))
			}
		}
	}
	return out
}

func cgroupRoots() []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var roots []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		i := slices.Index(fields, "-")
		if i < 5 || len(fields) < i+2 {
			continue
		}
		if t := fields[i+1]; t == "cgroup" || t == "cgroup2" {
			roots = append(roots, fields[4])
		}
	}
	return roots
}

// removeCgroup removes a cgroup directory and the ones below it, deepest first (their
// files are not removable; an empty cgroup's directory is).
func removeCgroup(dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = syscall.Rmdir(dirs[i])
	}
}

// removeCreatedDirs removes the mount points labs created, once no lab is left that may
// use them (removing a directory that is a mount point in another mount namespace would
// detach that mount).
func removeCreatedDirs() {
	entries, _ := os.ReadDir(baseDir)
	for _, e := range entries {
		if e.IsDir() {
			return
		}
	}
	created := readCreated()
	for i := len(created) - 1; i >= 0; i-- {
		_ = syscall.Rmdir(created[i])
	}
	_ = os.Remove(filepath.Join(baseDir, createdFile))
}

// leftovers lists whatever of m still exists.
func leftovers(m manifest, nsInodes map[uint64]bool) error {
	var left []string
	if procs := procsOf([]string{m.Dir + "/"}, nsInodes, m.Cgroups); len(procs) > 0 {
		left = append(left, fmt.Sprintf("processes %v", procs))
	}
	for _, ns := range m.NetNS {
		for _, p := range []string{filepath.Join("/run/netns", ns), filepath.Join("/etc/netns", ns)} {
			if _, err := os.Lstat(p); err == nil {
				left = append(left, p)
			}
		}
	}
	if linkExists(m.HostLink) {
		left = append(left, "link "+m.HostLink)
	}
	left = append(left, cgroupDirs(m.Cgroups)...)
	if _, err := os.Lstat(m.Dir); err == nil {
		left = append(left, m.Dir)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), m.Name) {
		left = append(left, "mounts naming "+m.Name)
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(left, ", "))
	}
	return nil
}
