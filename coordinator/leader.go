package coordinator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/internal/gossip"
	"github.com/rivetmetal/rivet/shared"
)

// RunLeaderLoop does the leader's chores while this node leads: initialise the cluster
// once, publish this coordinator's addresses, and plan discovered machines. It returns
// when ctx ends.
func (s *Server) RunLeaderLoop(ctx context.Context, apiAddr string, planner func(context.Context)) {
	leaderCh := s.raft.LeaderCh()
	var cancel context.CancelFunc = func() {}
	for {
		select {
		case <-ctx.Done():
			cancel()
			return
		case isLeader := <-leaderCh:
			cancel()
			if !isLeader {
				cancel = func() {}
				continue
			}
			var lctx context.Context
			lctx, cancel = context.WithCancel(ctx)
			go s.lead(lctx, apiAddr, planner)
		}
	}
}

func (s *Server) lead(ctx context.Context, apiAddr string, planner func(context.Context)) {
	s.log.Info("leading the cluster", "node", s.cfg.NodeID)
	// The barrier makes sure every entry from earlier terms is applied before we read.
	if err := s.raft.Barrier(s.cfg.ApplyTimeout).Error(); err != nil {
		s.log.Warn("leader barrier failed", "err", err)
		return
	}
	if err := s.initCluster(ctx, apiAddr); err != nil {
		s.log.Error("initialising the cluster failed", "err", err)
	}
	if err := s.publishOwnRecord(ctx, apiAddr); err != nil {
		s.log.Error("publishing this coordinator's addresses failed", "err", err)
	}
	if p := s.pool(); p != nil {
		p.Reconcile() // replay what gossip knows: the old leader may have missed events
	}
	go s.raiseProtocolWhenReady(ctx)
	go s.keepSwarm(ctx)
	if planner == nil {
		return
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		planner(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.kick:
		}
		// A pass reads the whole fleet: space them out whatever the kicks.
		select {
		case <-ctx.Done():
			return
		case <-time.After(minPlanInterval):
		}
	}
}

// minPlanInterval is the least time between two planning passes.
const minPlanInterval = 500 * time.Millisecond

// initCluster puts the CA this coordinator made at bootstrap into the replicated state,
// and creates the gossip key, the token secret and the first admin and enrolment tokens,
// once per cluster (the command carries them sealed). The admin token's secret exists
// only in DATA_DIR/operator.env (0600) on the first coordinator.
func (s *Server) initCluster(ctx context.Context, apiAddr string) error {
	if s.store.Cluster().Initialised() {
		s.dropBootstrapCAKey()
		return nil
	}
	now := time.Now().UTC()
	ca := s.id.ca
	if ca.KeyPEM == "" {
		return fmt.Errorf("the cluster is not initialised and this coordinator did not bootstrap it (no %s): "+
			"start the bootstrapping coordinator again", bootstrapCAFile)
	}
	gossipKey, err := gossip.GenerateKey()
	if err != nil {
		return err
	}
	admin, adminSecret := auth.NewToken("admin", shared.TokenAdmin, now)
	enrol, enrolSecret := auth.NewToken("default-enrol", shared.TokenEnrol, now)
	cmd := state.InitCluster{
		Cluster: state.Cluster{CACertPEM: ca.CertPEM, CAKeyPEM: ca.KeyPEM,
			GossipKey:   gossipKey,
			TokenSecret: auth.NewSecret(32), EnrolToken: enrolSecret, CreatedAt: now},
		AdminToken: admin, EnrolToken: enrol,
	}
	res, err := s.Apply(ctx, cmd)
	if err != nil {
		return err
	}
	if res.Value != "initialised" {
		return nil
	}
	s.dropBootstrapCAKey()
	fp, _ := ca.Fingerprint()
	path := filepath.Join(s.cfg.DataDir, "operator.env")
	creds := shared.OperatorCredentials{Servers: []string{"https://" + publicAddr(apiAddr, s.cfg.Advertise)},
		CAFingerprint: fp, Token: adminSecret, EnrolToken: enrolSecret}
	if err := shared.WriteOperatorCredentials(path, creds); err != nil {
		return err
	}
	s.log.Info("cluster initialised", "ca_fingerprint", fp, "operator_credentials", path)
	return nil
}

// dropBootstrapCAKey removes the CA key's bootstrap copy once the replicated state holds
// it (sealed): one copy of the key at rest, not two.
func (s *Server) dropBootstrapCAKey() {
	if s.id.ca.KeyPEM == "" || s.caKeyDropped.Swap(true) {
		return
	}
	if err := os.Remove(filepath.Join(s.cfg.DataDir, bootstrapCAFile)); err != nil && !os.IsNotExist(err) {
		s.log.Warn("removing the bootstrap CA key", "err", err)
	}
}

// Join adds a coordinator as a voter. Only the leader can; followers forward.
func (s *Server) Join(ctx context.Context, req shared.JoinRequest) error {
	if s.raft.State() != raft.Leader {
		var out struct{}
		return s.forwarder.PostJSON(ctx, shared.PathClusterJoin, req, &out)
	}
	cfgFuture := s.raft.GetConfiguration()
	if err := cfgFuture.Error(); err != nil {
		return err
	}
	for _, srv := range cfgFuture.Configuration().Servers {
		if srv.ID == raft.ServerID(req.ID) && srv.Address == raft.ServerAddress(req.RaftAddr) {
			return s.putCoordinator(ctx, req) // already a member: joining again is a no-op
		}
		if srv.ID == raft.ServerID(req.ID) || srv.Address == raft.ServerAddress(req.RaftAddr) {
			if err := s.raft.RemoveServer(srv.ID, 0, 0).Error(); err != nil {
				return fmt.Errorf("removing stale member %s: %w", srv.ID, err)
			}
		}
	}
	if err := s.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.RaftAddr), 0, 0).Error(); err != nil {
		return fmt.Errorf("adding voter %s: %w", req.ID, err)
	}
	s.log.Info("coordinator joined", "id", req.ID, "raft", req.RaftAddr, "api", req.APIAddr)
	return s.putCoordinator(ctx, req)
}

func (s *Server) putCoordinator(ctx context.Context, req shared.JoinRequest) error {
	c := state.Coordinator{ID: req.ID, RaftAddr: req.RaftAddr, APIAddr: req.APIAddr}
	if have, ok := s.store.Coordinator(req.ID); ok && have.RaftAddr == c.RaftAddr && have.APIAddr == c.APIAddr {
		return nil
	}
	_, err := s.Apply(ctx, state.PutCoordinator{Coordinator: c})
	return err
}

// JoinCluster asks an existing cluster to add this coordinator, retrying until it is
// accepted or ctx ends.
func (s *Server) JoinCluster(ctx context.Context, apiAddr string) error {
	client, err := shared.NewClient(shared.ClientConfig{URLs: s.cfg.Join, CAFingerprint: s.cfg.CAFingerprint,
		Token: s.cfg.JoinToken, Timeout: 15 * time.Second})
	if err != nil {
		return fmt.Errorf("--join: %w", err)
	}
	req := &shared.JoinRequest{ID: s.cfg.NodeID, RaftAddr: string(s.transport.LocalAddr()),
		APIAddr: publicAddr(apiAddr, s.cfg.Advertise)}
	for attempt := 0; ; attempt++ {
		err := client.Join(ctx, req)
		if err == nil {
			s.log.Info("joined the cluster", "via", s.cfg.Join)
			return nil
		}
		if st := shared.StatusOf(err); st == 401 || st == 403 {
			return fmt.Errorf("joining %v: %w (pass the cluster's admin token in RIVET_TOKEN or --token-file)", s.cfg.Join, err)
		}
		s.log.Warn("join failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff(attempt)):
		}
	}
}

// publicAddr turns a listen address into the host:port others dial.
func publicAddr(listen, ip string) string {
	a, err := advertiseAddr(listen, ip)
	if err != nil {
		return listen
	}
	return a.String()
}
