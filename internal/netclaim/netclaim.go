// Package netclaim records the network namespaces and host links a process creates, so
// that the next run can remove what a killed process left behind. Child processes die
// with their parent (Pdeathsig); namespaces and veths do not, and a stale host veth that
// still holds a test subnet's gateway address silently steals the next run's traffic.
//
// A claim is a small JSON file under Dir naming its owner (pid and start time, so a
// reused pid is not mistaken for the owner) and everything it created. Names are recorded
// before they are created, so a kill between the two leaks nothing.
package netclaim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rivetmetal/rivet/internal/atomicfile"
)

// Dir holds the claims. /run is emptied at boot, as are network namespaces.
const Dir = "/run/rivet-netclaims"

// Claim is one owner's record. Its methods are safe for concurrent use.
type Claim struct {
	mu   sync.Mutex
	path string
	rec  record
}

type record struct {
	PID        int      `json:"pid"`
	Start      string   `json:"start"` // /proc/PID/stat field 22
	Namespaces []string `json:"namespaces"`
	Links      []string `json:"links"` // in the host's namespace
}

// New sweeps the leftovers of dead owners, then starts a claim for this process named
// name (unique among live claims, e.g. a random tag). It returns what the sweep removed,
// for the caller to log.
func New(name string) (*Claim, []string, error) {
	removed := Sweep()
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return nil, removed, err
	}
	pid := os.Getpid()
	c := &Claim{
		path: filepath.Join(Dir, name+".json"),
		rec:  record{PID: pid, Start: ProcessStart(pid)},
	}
	return c, removed, c.save()
}

// Namespace records network namespace ns; call it before creating ns.
func (c *Claim) Namespace(ns string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rec.Namespaces = append(c.rec.Namespaces, ns)
	return c.save()
}

// Link records host link name (a veth's host end); call it before creating the link.
func (c *Claim) Link(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rec.Links = append(c.rec.Links, name)
	return c.save()
}

// Release removes everything the claim names and then the claim itself. It returns what
// it could not remove.
func (c *Claim) Release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := remove(c.rec)
	if err == nil {
		err = os.Remove(c.path)
	}
	return err
}

func (c *Claim) save() error {
	b, err := json.Marshal(c.rec)
	if err != nil {
		return err
	}
	return atomicfile.Write(c.path, b, 0o644)
}

// Sweep removes the namespaces and links of every claim whose owner is gone, and those
// claims. It returns one line per claim it removed. Claims it cannot read are left alone.
func Sweep() []string {
	entries, _ := os.ReadDir(Dir)
	var removed []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(Dir, e.Name())
		b, err := os.ReadFile(path)
		var rec record
		if err != nil || json.Unmarshal(b, &rec) != nil || rec.PID == 0 {
			continue
		}
		if ProcessStart(rec.PID) == rec.Start {
			continue // the owner is alive
		}
		err = remove(rec)
		if err == nil {
			err = os.Remove(path)
		}
		line := fmt.Sprintf("removed namespaces %v and links %v left by dead process %d", rec.Namespaces, rec.Links, rec.PID)
		if err != nil {
			line += fmt.Sprintf(" (incomplete: %v)", err)
		}
		removed = append(removed, line)
	}
	return removed
}

// remove deletes the namespaces (which takes the veths inside them along) and then the
// host links. Names that no longer exist are fine.
func remove(rec record) error {
	var errs []error
	for _, ns := range rec.Namespaces {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", ns, err, strings.TrimSpace(string(out))))
		}
	}
	for _, l := range rec.Links {
		if !linkExists(l) {
			continue
		}
		if out, err := exec.Command("ip", "link", "del", l).CombinedOutput(); err != nil && linkExists(l) {
			errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", l, err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := os.Lstat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// ProcessStart is pid's start time in clock ticks since boot (field 22 of
// /proc/PID/stat), or "" if there is no such process. With the pid it names a process
// uniquely: pids are reused, start times of the same pid are not.
func ProcessStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	fields := strings.Fields(string(b)[i+1:])
	if len(fields) < 20 {
		return ""
	}
	return fields[19] // fields[0] is field 3
}

// AddressHolder returns the host link that already has IPv4 address ip, or "" if none
// has. A lab about to put its gateway address on a new veth checks first: with two links
// holding the same address, the older one takes the traffic.
func AddressHolder(ip string) (string, error) {
	return holder(func(addr string) bool { return strings.HasPrefix(addr, ip+"/") })
}

// SubnetHolder returns the host link that already has an IPv4 address in the /24 whose
// first three octets are prefix (e.g. "10.232.81"), or "" if none has. A second link in
// the subnet gets a second route to it, and the older route takes the traffic: a lab
// whose namespace outlived its test answers the next lab's API calls with a refusal.
func SubnetHolder(prefix string) (string, error) {
	return holder(func(addr string) bool { return strings.HasPrefix(addr, prefix+".") })
}

// holder returns the first host link with an IPv4 address (as "a.b.c.d/n") that match accepts.
func holder(match func(addr string) bool) (string, error) {
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		return "", fmt.Errorf("ip addr show: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// "7: rvtph0c95de    inet 10.232.70.1/24 scope global rvtph0c95de ..."
		if f := strings.Fields(line); len(f) >= 4 && match(f[3]) {
			return strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"), nil
		}
	}
	return "", nil
}
