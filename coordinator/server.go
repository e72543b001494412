// Package coordinator wires one coordinator together: the Raft node and its store, the
// HTTPS API, the boot services and gossip, and the leader loop that initialises the
// cluster and plans machines. Any coordinator answers any call; writes that arrive at a
// follower are forwarded to the leader.
package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/rivetmetal/rivet/coordinator/forward"
	"github.com/rivetmetal/rivet/coordinator/fsm"
	"github.com/rivetmetal/rivet/coordinator/netboot"
	"github.com/rivetmetal/rivet/coordinator/pki"
	"github.com/rivetmetal/rivet/coordinator/powerctl"
	"github.com/rivetmetal/rivet/coordinator/raftlink"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// Config is one coordinator's configuration.
type Config struct {
	NodeID        string   // unique and stable; defaults to the host name
	DataDir       string   // Raft log, snapshots, operator.env
	APIAddr       string   // HTTPS API listen address, e.g. ":7443"
	RaftAddr      string   // Raft transport listen address, e.g. ":7400"
	Advertise     string   // the IP other coordinators and agents reach this one at
	Join          []string // API URLs of an existing cluster to join
	JoinToken     string   // an admin token of that cluster
	CAFingerprint string   // that cluster's CA fingerprint
	Logger        *slog.Logger
	Registry      *prometheus.Registry
	// ApplyTimeout bounds one Raft write (enqueue plus commit).
	ApplyTimeout time.Duration
	// FastElections shortens Raft timeouts for loopback test clusters.
	FastElections bool
	// TrailingLogs is how many log entries a snapshot keeps (default 4096); fewer
	// make a late joiner catch up through a snapshot.
	TrailingLogs uint64
	// CertLifetime is how long node certificates are valid (default pki.NodeLifetime);
	// they renew when a third of it is left.
	CertLifetime time.Duration
}

// Server is a running coordinator.
type Server struct {
	cfg Config
	// bootServices are this coordinator's boot services once they run (kexec answers).
	bootServices atomic.Pointer[netboot.Server]
	// power runs power commands for the leader's own needs (a re-image through a BMC).
	power     *powerctl.Manager
	log       *slog.Logger
	store     *state.Store
	raft      *raft.Raft
	transport *raft.NetworkTransport
	bolt      *raftboltdb.BoltStore
	metrics   *metrics
	forwarder *forward.Forwarder
	id        *identity                 // CA, node certificate, seal key: identity.go
	raftNode  atomic.Pointer[raft.Raft] // s.raft, for the link's handshakes that may run before it is set
	// caKeyDropped: the bootstrap copy of the CA key is gone (the state holds it).
	caKeyDropped atomic.Bool

	// kick asks the leader loop to plan now (a machine registered, a role changed).
	kick chan struct{}
	// gossip is the Serf side, set once the gossip key has replicated; nil when off.
	gossipMu  sync.RWMutex
	gossip    Membership
	gossipOff atomic.Bool // --gossip-addr off: the record names no gossip address

	plannedRoles atomicString  // roles version of the last planning pass
	versions     versionsCache // the members' versions and protocols, for readers
	keeper       SwarmKeeperOptions
}

// Membership is the gossip pool as the server needs it.
type Membership interface {
	Members() []shared.SerfMember
	Nudge(ctx context.Context, id shared.MachineID) error
	LocalAddr() string
	Reconcile() int
}

// New opens the Raft node (bootstrapping a new single-node cluster when the data
// directory is empty and no join address is given) and returns the server. A coordinator
// that joins first gets its node certificate and the seal key from the cluster (which
// may take until ctx ends): its Raft link cannot open without them.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, store: state.New(), kick: make(chan struct{}, 1)}
	s.metrics = newMetrics(cfg.Registry, s)
	if err := s.openIdentity(ctx); err != nil {
		return nil, err
	}
	s.store.UseSealKey(s.id.seal)
	if err := s.openRaft(); err != nil {
		return nil, err
	}
	s.forwarder = s.newForwarder()
	s.store.OnMachineChange(func(shared.MachineID) { s.metrics.machineChanged() })
	return s, nil
}

func (c *Config) fill() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// It holds the seal key and the node key: tighten it at every start, whatever made it.
	if err := os.Chmod(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.NodeID == "" {
		id, err := loadOrCreateNodeID(c.DataDir)
		if err != nil {
			return err
		}
		c.NodeID = id
	}
	if err := shared.ValidateName("coordinator", c.NodeID); err != nil {
		return fmt.Errorf("--node-id: %w", err)
	}
	if c.Advertise == "" {
		c.Advertise = "127.0.0.1"
	}
	if net.ParseIP(c.Advertise) == nil {
		return fmt.Errorf("--advertise %q: want an IP address", c.Advertise)
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = 10 * time.Second
	}
	if c.CertLifetime == 0 {
		c.CertLifetime = pki.NodeLifetime
	}
	if c.RaftAddr == "" {
		c.RaftAddr = net.JoinHostPort(c.Advertise, "7400")
	}
	return nil
}

// loadOrCreateNodeID keeps the node id in the data dir so a restart keeps its identity.
func loadOrCreateNodeID(dir string) (string, error) {
	path := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		return string(trimNewline(b)), nil
	}
	host, _ := os.Hostname()
	id := sanitizeName(host)
	if id == "" {
		id = "coordinator"
	}
	return id, os.WriteFile(path, []byte(id+"\n"), 0o600)
}

func sanitizeName(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(out) < 63; i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			out = append(out, c)
		case c >= 'A' && c <= 'Z':
			out = append(out, c+'a'-'A')
		case c == '-' || c == '.' || c == '_':
			out = append(out, '-')
		}
	}
	for len(out) > 0 && out[len(out)-1] == '-' {
		out = out[:len(out)-1]
	}
	return string(out)
}

func (s *Server) openRaft() error {
	cfg := s.cfg
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = newHCLog(s.log, "raft", hclog.Warn)
	// Concurrent writes share one log append (one fsync): the leader drains its apply
	// channel into a single batch of up to MaxAppendEntries.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 512
	rc.SnapshotThreshold = 4096
	// Raft looks for a snapshot to take every 1-2 intervals. Its default, 2 min, lets a
	// busy cluster grow the log by 100,000+ entries between snapshots (128 MB of bolt at
	// 10,000 machines, much of it resident through the mmap); 20 s keeps it near 30 MB for
	// a snapshot's ~1 s of CPU at that size, and a quiet cluster takes none.
	rc.SnapshotInterval = 20 * time.Second
	rc.TrailingLogs = 4096
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if cfg.FastElections {
		rc.HeartbeatTimeout = 500 * time.Millisecond
		rc.ElectionTimeout = 500 * time.Millisecond
		rc.LeaderLeaseTimeout = 250 * time.Millisecond
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db"), BoltOptions: &bbolt.Options{
		// A second coordinator on the same data dir fails at once instead of waiting forever.
		Timeout: time.Second,
		// The free-page list is rebuilt at open rather than written with every commit
		// (as etcd does): fewer pages per fsync on the commit path. Raft truncates its
		// log behind snapshots, so the file stays small and the scan at open is short.
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	}})
	if err != nil {
		return fmt.Errorf("opening raft log %s: %w (is another coordinator using this data dir?)",
			filepath.Join(cfg.DataDir, "raft.db"), err)
	}
	s.bolt = bolt
	logs, err := raft.NewLogCache(1024, bolt)
	if err != nil {
		return err
	}
	snaps, err := openSnapshots(cfg.DataDir, newHCLog(s.log, "raft-snapshots", hclog.Warn))
	if err != nil {
		return err
	}
	if s.transport, err = s.openLink(); err != nil {
		return err
	}
	existing, err := raft.HasExistingState(logs, bolt, snaps)
	if err != nil {
		return err
	}
	s.raft, err = raft.NewRaft(rc, &fsm.FSM{Store: s.store}, logs, bolt, snaps, s.transport)
	if err != nil {
		return err
	}
	s.raftNode.Store(s.raft)
	if !existing && len(cfg.Join) == 0 {
		s.log.Info("bootstrapping a new cluster", "node", cfg.NodeID, "raft", s.transport.LocalAddr())
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: s.transport.LocalAddr()}}}
		if err := s.raft.BootstrapCluster(boot).Error(); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	return nil
}

// advertiseAddr turns a listen address such as ":7400" into one peers can dial.
func advertiseAddr(listen, ip string) (*net.TCPAddr, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = ip
	}
	return net.ResolveTCPAddr("tcp", net.JoinHostPort(host, port))
}

// Store is the replicated state, for reads.
func (s *Server) Store() *state.Store { return s.store }

// NodeID is this coordinator's id.
func (s *Server) NodeID() string { return s.cfg.NodeID }

// Kick asks the leader loop to plan now.
func (s *Server) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// IsLeader reports whether this coordinator leads.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// Shutdown stops the forwarder and Raft and closes the log. A leader with other voters
// first hands leadership to one of them, so that stopping it (to upgrade it, say) costs
// the cluster no election timeout.
func (s *Server) Shutdown() error {
	s.handOverLeadership()
	s.forwarder.Close()
	err := s.raft.Shutdown().Error()
	_ = s.transport.Close()
	if cerr := s.bolt.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *Server) handOverLeadership() {
	if !s.IsLeader() {
		return
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	voters := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters < 2 {
		return
	}
	start := time.Now()
	if err := s.raft.LeadershipTransfer().Error(); err != nil {
		s.log.Warn("handing over leadership before shutdown failed; the others will elect a leader", "err", err)
		return
	}
	_, to := s.raft.LeaderWithID()
	s.log.Info("leadership handed over before shutdown", "to", to, "took", time.Since(start).Round(time.Millisecond))
}

// TLSConfig serves the API with this node's certificate (issued by the cluster CA,
// renewed before it expires). A client certificate from the cluster CA is asked for but
// optional: coordinators forwarding writes present theirs (requireNodeCert checks it).
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: raftlink.Suites,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.id.cert.Get()
		},
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  s.id.roots,
	}
}

// CAFingerprint is the fingerprint of the cluster CA.
func (s *Server) CAFingerprint() string {
	fp, _ := s.id.ca.Fingerprint()
	return fp
}

// WaitReady blocks until this coordinator has the cluster CA and knows a leader.
func (s *Server) WaitReady(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if err := s.store.SealError(); err != nil {
			return fmt.Errorf("the replicated secrets do not open with DATA_DIR/seal.key: %w", err)
		}
		_, leader := s.raft.LeaderWithID()
		if s.store.Cluster().Initialised() && leader != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a leader and the cluster CA: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// pool returns the gossip pool, or nil before it started or when gossip is off.
func (s *Server) pool() Membership {
	s.gossipMu.RLock()
	defer s.gossipMu.RUnlock()
	return s.gossip
}

func (s *Server) setPool(m Membership) {
	s.gossipMu.Lock()
	s.gossip = m
	s.gossipMu.Unlock()
}

// atomicString is a string read and written atomically.
type atomicString struct{ v atomic.Value }

func (a *atomicString) Load() string {
	s, _ := a.v.Load().(string)
	return s
}

func (a *atomicString) Store(s string) { a.v.Store(s) }
