package coordinator

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/shared"
)

// Health is this coordinator's view of itself and the cluster.
func (s *Server) Health() shared.Health {
	_, leaderID := s.raft.LeaderWithID()
	h := shared.Health{
		Status:          shared.HealthOK,
		NodeID:          s.cfg.NodeID,
		RaftState:       s.raft.State().String(),
		Leader:          string(leaderID),
		AppliedIndex:    s.store.Applied(),
		Machines:        s.store.MachineCount(),
		Version:         shared.Version,
		CAFingerprint:   s.CAFingerprint(),
		Protocol:        shared.Protocol,
		ClusterProtocol: s.store.Protocol(),
	}
	if c, ok := s.store.Coordinator(string(leaderID)); ok {
		h.LeaderAPI = c.APIAddr
	}
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				h.Voters++
			}
		}
	}
	if leaderID == "" || !s.store.Cluster().Initialised() {
		h.Status = shared.HealthDegraded
	}
	return h
}

// Snapshot takes a Raft snapshot on this coordinator now (backups, log compaction).
func (s *Server) Snapshot() error {
	if err := s.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// Members lists the Raft peers, each with the version and protocol it reports, and the
// gossip pool.
func (s *Server) Members() shared.Members {
	out := shared.Members{Raft: []shared.RaftPeer{}, Serf: []shared.SerfMember{}, // JSON lists are [], never null
		ClusterProtocol: s.store.Protocol()}
	versions := map[string]peerVersion{}
	if peers, err := s.recentPeerVersions(); err == nil {
		for _, p := range peers {
			versions[p.ID] = p
		}
	}
	_, leaderID := s.raft.LeaderWithID()
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			p := shared.RaftPeer{ID: string(srv.ID), Address: string(srv.Address),
				Suffrage: srv.Suffrage.String(), Leader: srv.ID == leaderID}
			if c, ok := s.store.Coordinator(string(srv.ID)); ok {
				p.APIAddr = c.APIAddr
			}
			v := versions[string(srv.ID)]
			p.Version, p.Protocol, p.Unreachable = v.Version, v.Protocol, v.Unreachable
			out.Raft = append(out.Raft, p)
		}
	}
	if p := s.pool(); p != nil {
		out.Serf = p.Members()
	}
	return out
}

// GossipInfo is what agents need to join the pool: the key and the coordinators'
// gossip addresses. The key is a secret: only enrolled machines and admins see it.
func (s *Server) GossipInfo() shared.GossipInfo {
	info := shared.GossipInfo{Key: s.store.Cluster().GossipKey}
	for _, c := range s.store.Coordinators() {
		if c.GossipAddr != "" {
			info.Addrs = append(info.Addrs, c.GossipAddr)
		}
	}
	return info
}
