package coordinatortest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"

	"github.com/rivetmetal/rivet/internal/netclaim"
)

// Bridge puts every coordinator in a network namespace of its own on a bridge (root only),
// so that one can be cut off (Cluster.Cut) and healed. Each namespace has two links: eth0
// on the bridge carries coordinator-to-coordinator traffic (Raft, forwarding, gossip); a
// point-to-point veth to the host carries the machines' and the harness's traffic. Cutting
// eth0 partitions the coordinators while the machines still reach both sides, as when a
// switch between racks fails.
type Bridge struct {
	// Subnet is the /24 of the bridge, e.g. "10.232.100": the host gets .1, coordinator
	// i (0-based) .(11+i).
	Subnet string
	// Prefix starts every namespace and link name (default "rvtf"); a random tag follows,
	// so that two runs never share a name.
	Prefix string
}

// bridgeNet is a Bridge once made: the namespace holding the bridge, the host's veth, and
// the claim that removes both (and the coordinators' namespaces) on Stop or in the next run.
type bridgeNet struct {
	Bridge
	tag      string
	lan      string
	hostLink string
	claim    *netclaim.Claim
}

func newBridgeNet(b Bridge) (*bridgeNet, error) {
	if b.Prefix == "" {
		b.Prefix = "rvtf"
	}
	if b.Subnet == "" {
		return nil, errors.New("coordinatortest: a Bridge needs a Subnet")
	}
	tag := make([]byte, 3)
	_, _ = rand.Read(tag)
	n := &bridgeNet{Bridge: b, tag: hex.EncodeToString(tag)}
	n.lan, n.hostLink = n.name("l"), n.name("h")
	claim, swept, err := netclaim.New(n.name(""))
	for _, line := range swept {
		slog.Info("netclaim: " + line)
	}
	if err != nil {
		return nil, fmt.Errorf("recording the namespaces: %w", err)
	}
	n.claim = claim
	if holder, err := netclaim.AddressHolder(n.hostIP()); err != nil || holder != "" {
		return n, fmt.Errorf("%s is already on host link %q (%v): choose another subnet or remove the leftover with `ip link del %s`",
			n.hostIP(), holder, err, holder)
	}
	if err := errors.Join(claim.Namespace(n.lan), claim.Link(n.hostLink)); err != nil {
		return n, fmt.Errorf("recording the namespaces: %w", err)
	}
	return n, ipAll(
		[]string{"netns", "add", n.lan},
		[]string{"-n", n.lan, "link", "set", "lo", "up"},
		[]string{"-n", n.lan, "link", "add", "br0", "type", "bridge"},
		[]string{"-n", n.lan, "link", "set", "br0", "up"},
		[]string{"link", "add", n.hostLink, "type", "veth", "peer", "name", "up0", "netns", n.lan},
		[]string{"-n", n.lan, "link", "set", "up0", "master", "br0", "up"},
		[]string{"addr", "add", n.hostIP() + "/24", "dev", n.hostLink},
		[]string{"link", "set", n.hostLink, "up"},
	)
}

// name is prefix, tag and suffix: every name this bridge makes, and only those, holds
// prefix+tag (Leftovers relies on it).
func (n *bridgeNet) name(suffix string) string { return n.Prefix + n.tag + suffix }

func (n *bridgeNet) hostIP() string { return n.Subnet + ".1" }

// place makes coordinator i's namespace, its link to the bridge and its link to the host,
// and sets the node's namespace, address and bridge link.
func (n *bridgeNet) place(i int, node *Node) error {
	node.Host = fmt.Sprintf("%s.%d", n.Subnet, 10+i+1)
	node.Netns = n.name(node.ID)
	node.lanLink = node.ID
	p2p := n.name(fmt.Sprintf("p%d", i+1))
	if err := errors.Join(n.claim.Namespace(node.Netns), n.claim.Link(p2p)); err != nil {
		return fmt.Errorf("recording the namespaces: %w", err)
	}
	ns, ip := node.Netns, node.Host
	return ipAll(
		[]string{"netns", "add", ns},
		[]string{"-n", ns, "link", "set", "lo", "up"},
		[]string{"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", node.lanLink, "netns", n.lan},
		[]string{"-n", n.lan, "link", "set", node.lanLink, "master", "br0", "up"},
		[]string{"-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
		[]string{"-n", ns, "link", "set", "eth0", "up"},
		[]string{"link", "add", p2p, "type", "veth", "peer", "name", "h0", "netns", ns},
		[]string{"link", "set", p2p, "up"},
		[]string{"-n", ns, "link", "set", "h0", "up"},
		[]string{"route", "add", ip + "/32", "dev", p2p, "src", n.hostIP()},
		[]string{"-n", ns, "route", "add", n.hostIP() + "/32", "dev", "h0", "src", ip},
	)
}

// setLink sets a coordinator's link to the bridge up or down.
func (n *bridgeNet) setLink(node *Node, state string) error {
	return ipAll([]string{"-n", n.lan, "link", "set", node.lanLink, state})
}

// release removes every namespace and link the bridge made.
func (n *bridgeNet) release() {
	if n.claim == nil {
		return
	}
	if err := n.claim.Release(); err != nil {
		slog.Warn("removing the cluster's namespaces", "err", err)
	}
	n.claim = nil
}

// leftovers lists namespaces and links of this bridge that still exist.
func (n *bridgeNet) leftovers() []string {
	var left []string
	for _, args := range [][]string{{"netns", "list"}, {"-br", "link"}} {
		out, _ := exec.Command("ip", args...).Output()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, n.name("")) {
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
