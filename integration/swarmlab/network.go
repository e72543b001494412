package swarmlab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// lanNS is the namespace that holds the bridge. The bridge is not in the host's namespace
// because, with br_netfilter, bridged frames traverse the FORWARD chain of the bridge's
// namespace, and a Docker engine on the host sets that policy to DROP there.
func (l *Lab) lanNS() string { return l.Name + "-lan" }

// network creates the bridge namespace, the host's veth into it and one namespace per
// node with eth0 on the bridge. Nodes get no default route: nothing can leave the lab.
func (l *Lab) network() error {
	lan, bits := l.lanNS(), fmt.Sprint(l.Subnet.Bits())
	cmds := [][]string{
		{"netns", "add", lan},
		{"-n", lan, "link", "set", "lo", "up"},
		{"-n", lan, "link", "add", "br0", "type", "bridge"},
		{"-n", lan, "link", "set", "br0", "up"},
		{"link", "add", l.HostLink, "type", "veth", "peer", "name", "host", "netns", lan},
		{"-n", lan, "link", "set", "host", "master", "br0", "up"},
		{"addr", "add", l.HostIP.String() + "/" + bits, "dev", l.HostLink},
		{"link", "set", l.HostLink, "up"},
	}
	for _, n := range l.Nodes {
		port := fmt.Sprintf("n%d", n.Index)
		cmds = append(cmds,
			[]string{"netns", "add", n.NetNS},
			[]string{"link", "add", port, "netns", lan, "type", "veth", "peer", "name", "eth0", "netns", n.NetNS},
			[]string{"-n", lan, "link", "set", port, "master", "br0", "up"},
			[]string{"-n", n.NetNS, "addr", "add", n.IP.String() + "/" + bits, "dev", "eth0"},
			[]string{"-n", n.NetNS, "link", "set", "eth0", "up"},
			[]string{"-n", n.NetNS, "link", "set", "lo", "up"},
		)
	}
	for _, args := range cmds {
		if err := ip(args...); err != nil {
			return err
		}
	}
	// `ip netns exec` bind-mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf: keep the
	// nodes' DNS on their own loopback, so that no lookup tries to leave the lab.
	for _, n := range l.Nodes {
		dir := filepath.Join("/etc/netns", n.NetNS)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ip runs the ip command and returns its output in the error.
func ip(args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// MAC is the hardware address of the node's eth0, as its agent's inventory reports it:
// what an operator's expected-machines import names it by.
func (n *Node) MAC() (string, error) {
	out, err := exec.Command("ip", "-n", n.NetNS, "-o", "link", "show", "eth0").Output()
	if err != nil {
		return "", fmt.Errorf("reading %s's eth0: %w", n.Name, err)
	}
	fields := strings.Fields(string(out))
	for i, f := range fields {
		if f == "link/ether" && i+1 < len(fields) {
			return fields[i+1], nil
		}
	}
	return "", fmt.Errorf("no MAC in %q", out)
}
