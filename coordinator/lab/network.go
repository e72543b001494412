package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/internal/netclaim"
)

// The lab network: a namespace holding a bridge (the coordinator's address, .1) with one
// tap per VM, and a veth whose host end (.254) lets the operator reach the API and the
// status pages from the host. The bridge lives in its own namespace, not the host's, so
// that the host's firewall (a Docker engine sets FORWARD to DROP) never sees the lab's
// bridged traffic, and the coordinator's DHCP serves nothing but the lab.

// ip runs the ip command and returns its error with its output.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func netnsExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

func linkExists(ctx context.Context, netns, link string) bool {
	args := []string{"link", "show", "dev", link}
	if netns != "" {
		args = append([]string{"-n", netns}, args...)
	}
	return exec.CommandContext(ctx, "ip", args...).Run() == nil
}

// networkUp creates whatever of the lab network is missing, so a second Up reuses the first.
func (c *Config) networkUp(ctx context.Context) error {
	ns, br := c.netns(), c.bridge()
	if err := c.claimNetwork(ctx); err != nil {
		return err
	}
	if !netnsExists(ns) {
		if err := ip(ctx, "netns", "add", ns); err != nil {
			return fmt.Errorf("%w (the lab needs root for network namespaces)", err)
		}
	}
	steps := [][]string{{"-n", ns, "link", "set", "lo", "up"}}
	if !linkExists(ctx, ns, br) {
		steps = append(steps,
			[]string{"-n", ns, "link", "add", br, "type", "bridge"},
			[]string{"-n", ns, "addr", "add", c.bridgeIP() + "/24", "dev", br})
	}
	steps = append(steps, []string{"-n", ns, "link", "set", br, "up"})
	if !linkExists(ctx, "", c.hostLink()) {
		steps = append(steps,
			[]string{"link", "add", c.hostLink(), "type", "veth", "peer", "name", c.lanLink(), "netns", ns},
			[]string{"addr", "add", c.hostIP() + "/24", "dev", c.hostLink()})
	}
	steps = append(steps,
		[]string{"-n", ns, "link", "set", c.lanLink(), "master", br, "up"},
		[]string{"link", "set", c.hostLink(), "up"})
	for _, args := range steps {
		if err := ip(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// claimNetwork records the namespace and host link with c.Claim, and refuses a subnet
// that another host link already has an address in: the host would then route the lab's
// API and status traffic to that link's older route, and the lab would look dead.
func (c *Config) claimNetwork(ctx context.Context) error {
	if c.Claim != nil {
		if err := errors.Join(c.Claim.Namespace(c.netns()), c.Claim.Link(c.hostLink())); err != nil {
			return fmt.Errorf("recording the lab's network: %w", err)
		}
	}
	if linkExists(ctx, "", c.hostLink()) {
		return nil // this lab's own, from an earlier Up
	}
	holder, err := netclaim.SubnetHolder(c.Subnet)
	if err != nil {
		return err
	}
	if holder != "" {
		return fmt.Errorf("host link %s already has an address in %s.0/24, so the lab's traffic would go there: "+
			"take that lab down (`rivet lab down`, with its --name) or remove the link (`ip link del %s`), or give this lab another --subnet",
			holder, c.Subnet, holder)
	}
	return nil
}

// tapUp creates VM i's tap on the bridge, unless it exists.
func (c *Config) tapUp(ctx context.Context, i int) error {
	ns, tap := c.netns(), c.tap(i)
	if !linkExists(ctx, ns, tap) {
		if err := ip(ctx, "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap"); err != nil {
			return err
		}
	}
	if slices.Contains(c.Unplugged, i) {
		// The cable left out: the VM's NIC has a link, and nothing answers its PXE.
		return ip(ctx, "-n", ns, "link", "set", tap, "nomaster", "up")
	}
	return ip(ctx, "-n", ns, "link", "set", tap, "master", c.bridge(), "up")
}

// Plug plugs VM vm's network cable into the lab's switch (the bridge), or pulls it:
// `rivet lab cable`. A VM started with its cable out (Config.Unplugged) fails its PXE
// boot; plugged in, it boots only when something powers it on again — its BMC, on the
// coordinator's recovery.
func Plug(ctx context.Context, cfg Config, vm int, plugged bool) error {
	st, err := readState(filepath.Join(cfg.Dir, "lab.json"))
	if err != nil {
		return fmt.Errorf("no lab in %s: %w", cfg.Dir, err)
	}
	cfg.Name, cfg.Subnet = st.Name, st.Subnet
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	if _, ok := st.Firmwares[vm]; !ok {
		return fmt.Errorf("the lab in %s has no vm%d", cfg.Dir, vm)
	}
	if plugged {
		return ip(ctx, "-n", cfg.netns(), "link", "set", cfg.tap(vm), "master", cfg.bridge(), "up")
	}
	return ip(ctx, "-n", cfg.netns(), "link", "set", cfg.tap(vm), "nomaster")
}

// networkDown removes the namespace (with the bridge, the taps and the veth's lab end)
// and the veth's host end, and waits for the kernel: namespaces go away asynchronously.
func (c *Config) networkDown(ctx context.Context) error {
	if netnsExists(c.netns()) {
		if err := ip(ctx, "netns", "del", c.netns()); err != nil {
			return err
		}
	}
	if linkExists(ctx, "", c.hostLink()) {
		// Deleting the namespace takes the pair with it; this is for a half-made lab.
		_ = ip(ctx, "link", "del", c.hostLink())
	}
	deadline := time.Now().Add(15 * time.Second)
	for linkExists(ctx, "", c.hostLink()) {
		if time.Now().After(deadline) {
			return fmt.Errorf("link %s still exists 15 s after its namespace was deleted", c.hostLink())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// Leftovers lists whatever of this lab still exists on the host: namespace, links,
// processes and mounts. Down ends with none; the integration test checks it.
func (c *Config) Leftovers(ctx context.Context) []string {
	var left []string
	if netnsExists(c.netns()) {
		left = append(left, "network namespace "+c.netns())
	}
	out, _ := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], c.Name) {
			left = append(left, "link "+strings.TrimSuffix(f[1], ":"))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == c.Dir || strings.HasPrefix(f[4], c.Dir+"/") || f[4] == "/run/netns/"+c.netns()) {
			left = append(left, "mount "+f[4])
		}
	}
	for _, pid := range c.processes() {
		left = append(left, fmt.Sprintf("process %d", pid))
	}
	if _, err := os.Stat(c.Dir); err == nil {
		left = append(left, "directory "+c.Dir)
	}
	return left
}
