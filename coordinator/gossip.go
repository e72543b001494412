package coordinator

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/rivetmetal/rivet/coordinator/membership"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// startGossip joins this coordinator to the Serf pool once the cluster's gossip key has
// replicated here, joins the other coordinators, and publishes its gossip address.
func (s *Server) startGossip(ctx context.Context, bindAddr, apiAddr string) (*membership.Pool, error) {
	key := s.store.Cluster().GossipKey
	pool, err := membership.Start(membership.Config{
		NodeName: s.cfg.NodeID, BindAddr: bindAddr, AdvertiseAddr: s.cfg.Advertise,
		APIAddr: publicAddr(apiAddr, s.cfg.Advertise), Key: key,
		SnapshotPath: filepath.Join(s.cfg.DataDir, "serf.snapshot"),
		Recorder:     s, Logger: s.log.With("component", "gossip"),
	})
	if err != nil {
		return nil, err
	}
	s.setPool(pool)
	var peers []string
	for _, c := range s.store.Coordinators() {
		if c.ID != s.cfg.NodeID && c.GossipAddr != "" {
			peers = append(peers, c.GossipAddr)
		}
	}
	if len(peers) > 0 {
		if _, err := pool.Join(peers); err != nil {
			s.log.Warn("joining the other coordinators' gossip failed; they will find us", "err", err)
		}
	}
	return pool, s.publishOwnRecord(ctx, apiAddr)
}

// publishOwnRecord makes sure this coordinator's record names its current addresses;
// any coordinator can do this (a follower's write is forwarded). The gossip address is
// the pool's once it runs. Before that the recorded one stays: a coordinator elected
// leader right after a restart publishes before its pool is up, and used to erase its
// gossip address from the record (agents then could not reach its pool).
func (s *Server) publishOwnRecord(ctx context.Context, apiAddr string) error {
	want := state.Coordinator{ID: s.cfg.NodeID, RaftAddr: string(s.transport.LocalAddr()),
		APIAddr: publicAddr(apiAddr, s.cfg.Advertise)}
	have, ok := s.store.Coordinator(s.cfg.NodeID)
	switch p := s.pool(); {
	case p != nil:
		want.GossipAddr = p.LocalAddr()
	case !s.gossipOff.Load():
		want.GossipAddr = have.GossipAddr
	}
	if ok && have == want {
		return nil
	}
	for attempt := 0; ; attempt++ {
		_, err := s.Apply(ctx, state.PutCoordinator{Coordinator: want})
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || attempt > 20 {
			return fmt.Errorf("publishing this coordinator's addresses: %w", err)
		}
		time.Sleep(backoff(attempt))
	}
}

// MachineAlive implements membership.Recorder: a lost machine that gossips again returns
// to the state it was lost from. Only the leader writes; the pool calls every coordinator.
func (s *Server) MachineAlive(ctx context.Context, id shared.MachineID, _ string) error {
	if !s.IsLeader() {
		return nil
	}
	m, ok := s.store.Machine(id)
	if !ok || m.State != shared.StateLost {
		return nil
	}
	return s.applyGossip(ctx, state.Gossip{ID: id, Alive: true, Time: time.Now().UTC()})
}

// MachineLost implements membership.Recorder. A member that left gracefully (an agent
// stopping or a machine rebooting into its OS) is not lost; one whose failure detection
// gave up is marked lost, as a hint only.
func (s *Server) MachineLost(ctx context.Context, id shared.MachineID, reason string) error {
	if !s.IsLeader() || reason != membership.ReasonFailed {
		return nil
	}
	m, ok := s.store.Machine(id)
	if !ok || m.State == shared.StateLost || m.State == shared.StateRetired {
		return nil
	}
	return s.applyGossip(ctx, state.Gossip{ID: id, Alive: false, Reason: "failure detection gave up on its agent", Time: time.Now().UTC()})
}

func (s *Server) applyGossip(ctx context.Context, g state.Gossip) error {
	_, err := s.Apply(ctx, g)
	if state.KindOf(err) == state.KindNotFound {
		return nil // the machine is gone: nothing to hint about
	}
	return err
}

// Nudge tells a machine's agent, through gossip, to fetch its plan now. Best effort:
// agents also poll.
func (s *Server) Nudge(id shared.MachineID) {
	p := s.pool()
	if p == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Nudge(ctx, id)
	}()
}
