package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

// UpgradeCheck is `rivet members upgrade-check`'s answer: the members, the order to
// upgrade them in, and what holds the upgrade back now.
type UpgradeCheck struct {
	ClusterProtocol int               `json:"cluster_protocol"`
	TargetProtocol  int               `json:"target_protocol"` // what this rivet speaks
	Members         []shared.RaftPeer `json:"members"`
	// Order is the members still to upgrade: followers first, the leader last.
	Order []string `json:"order"`
	// Blockers say why upgrading the next member now would cost availability.
	Blockers []string `json:"blockers,omitempty"`
}

func membersUpgradeCheck(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "members upgrade-check", "rivet members upgrade-check [--output json]\n\n"+
		"Lists the coordinators with the version and protocol each reports, and the order to\n"+
		"upgrade them in to this rivet's protocol: one at a time, followers first, the leader\n"+
		"last (stopping it with SIGTERM hands leadership to an upgraded follower). It fails\n"+
		"while upgrading the next one would leave the cluster without a majority.")
	if err := v.parse(args); err != nil {
		return err
	}
	c, err := v.client()
	if err != nil {
		return err
	}
	m, err := c.Members(ctx)
	if err != nil {
		return err
	}
	check := planUpgrade(m, shared.Protocol)
	if err := output(v, &check, printUpgradeCheck); err != nil {
		return err
	}
	if len(check.Blockers) > 0 {
		return fmt.Errorf("not safe to upgrade the next coordinator now: %s", strings.Join(check.Blockers, "; "))
	}
	return nil
}

// planUpgrade orders the members still below target: followers first, the leader last.
// Upgrading one means stopping it, so every other voter must be reachable, and there
// must be at least three voters for the rest to keep a majority meanwhile.
func planUpgrade(m *shared.Members, target int) UpgradeCheck {
	check := UpgradeCheck{ClusterProtocol: shared.ProtocolOf(m.ClusterProtocol), TargetProtocol: target,
		Members: m.Raft, Order: []string{}}
	var leader string
	voters := 0
	for _, p := range m.Raft {
		if p.Suffrage == "Voter" {
			voters++
		}
		if p.Unreachable != "" {
			check.Blockers = append(check.Blockers, fmt.Sprintf("%s is unreachable (%s): bring it back before stopping another", p.ID, p.Unreachable))
			continue
		}
		if shared.ProtocolOf(p.Protocol) >= target {
			continue
		}
		if p.Leader {
			leader = p.ID
			continue
		}
		check.Order = append(check.Order, p.ID)
	}
	if leader != "" {
		check.Order = append(check.Order, leader)
	}
	if len(check.Order) > 0 && voters < 3 {
		check.Blockers = append(check.Blockers, fmt.Sprintf(
			"the cluster has %d voter(s): stopping one to upgrade it stops writes until it is back", voters))
	}
	return check
}

func printUpgradeCheck(w io.Writer, c *UpgradeCheck) {
	rows := [][]string{}
	for _, p := range c.Members {
		role := "follower"
		if p.Leader {
			role = "leader"
		}
		rows = append(rows, []string{p.ID, role, peerVersion(p), peerProtocol(p)})
	}
	fmt.Fprintf(w, "The cluster runs at protocol %d; this rivet speaks protocol %d.\n", c.ClusterProtocol, c.TargetProtocol)
	table(w, []string{"ID", "ROLE", "VERSION", "PROTOCOL"}, rows)
	switch {
	case len(c.Order) == 0 && c.ClusterProtocol >= c.TargetProtocol:
		fmt.Fprintf(w, "\nEvery coordinator speaks protocol %d and the cluster runs at it: nothing to upgrade.\n", c.TargetProtocol)
	case len(c.Order) == 0:
		fmt.Fprintf(w, "\nEvery coordinator speaks protocol %d: the leader raises the cluster to it within seconds.\n", c.TargetProtocol)
	default:
		fmt.Fprintln(w, "\nUpgrade one at a time, in this order; after each, wait until `rivet health` on it says ok:")
		for i, id := range c.Order {
			note := ""
			if i == len(c.Order)-1 && isLeader(c.Members, id) {
				note = " (the leader: SIGTERM hands leadership to an upgraded follower first)"
			}
			fmt.Fprintf(w, "  %d. %s%s\n", i+1, id, note)
		}
		fmt.Fprintf(w, "Once all speak protocol %d the leader raises the cluster to it; newer commands wait until then.\n"+
			"Do not start an older rivet on a member after that: it would stop at the first newer entry.\n", c.TargetProtocol)
	}
	for _, b := range c.Blockers {
		fmt.Fprintf(w, "Blocked: %s\n", b)
	}
}

func isLeader(peers []shared.RaftPeer, id string) bool {
	for _, p := range peers {
		if p.ID == id {
			return p.Leader
		}
	}
	return false
}

func peerVersion(p shared.RaftPeer) string {
	if p.Unreachable != "" {
		return "unreachable"
	}
	return orDash(p.Version)
}

func peerProtocol(p shared.RaftPeer) string {
	if p.Unreachable != "" {
		return "-"
	}
	return fmt.Sprint(shared.ProtocolOf(p.Protocol))
}
