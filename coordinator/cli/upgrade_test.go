package cli

import (
	"slices"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

func TestPlanUpgradeFollowersFirstLeaderLast(t *testing.T) {
	peer := func(id string, leader bool, protocol int) shared.RaftPeer {
		return shared.RaftPeer{ID: id, Suffrage: "Voter", Leader: leader, Protocol: protocol, Version: "v"}
	}
	m := &shared.Members{ClusterProtocol: 1, Raft: []shared.RaftPeer{
		peer("c1", true, 0), peer("c2", false, 2), peer("c3", false, 0)}}
	got := planUpgrade(m, 2)
	if !slices.Equal(got.Order, []string{"c3", "c1"}) || len(got.Blockers) != 0 {
		t.Fatalf("order %v blockers %v, want [c3 c1] and none (c2 is upgraded, c1 leads)", got.Order, got.Blockers)
	}

	m.Raft[2] = shared.RaftPeer{ID: "c3", Suffrage: "Voter", Unreachable: "connection refused"}
	if got := planUpgrade(m, 2); len(got.Blockers) != 1 || !strings.Contains(got.Blockers[0], "c3 is unreachable") {
		t.Fatalf("with c3 down: blockers %v, want one naming c3", got.Blockers)
	}

	two := &shared.Members{Raft: []shared.RaftPeer{peer("c1", true, 0), peer("c2", false, 0)}}
	if got := planUpgrade(two, 2); len(got.Blockers) != 1 || !strings.Contains(got.Blockers[0], "2 voter") {
		t.Fatalf("two voters: blockers %v, want the majority warning", got.Blockers)
	}

	done := &shared.Members{ClusterProtocol: 2, Raft: []shared.RaftPeer{peer("c1", true, 2)}}
	if got := planUpgrade(done, 2); len(got.Order) != 0 || len(got.Blockers) != 0 {
		t.Fatalf("nothing to upgrade: %+v", got)
	}
}
