package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/rivetmetal/rivet/coordinator/api"
	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/membership"
	"github.com/rivetmetal/rivet/coordinator/netboot"
	"github.com/rivetmetal/rivet/coordinator/status"
	"github.com/rivetmetal/rivet/shared"
)

// DaemonConfig is a whole coordinator process: the server plus its listeners.
type DaemonConfig struct {
	Server   Config
	APIAddr  string // HTTPS listen address
	ImageDir string // OS images served under /v1/images/; default DATA_DIR/images
	// Plan tunes the leader's planning pass (settle time, manager placement).
	Plan PlanOptions
	// GossipAddr is the Serf bind address (default ":7946"); "off" disables gossip.
	GossipAddr string
	// Netboot configures the boot services (proxyDHCP or DHCP, TFTP, HTTP boot); nil: off.
	// The coordinator fills in the state-backed parts (Booter, API URLs, CA, token).
	Netboot *netboot.Config
	// Pprof serves /debug/pprof/ to admin tokens.
	Pprof bool
	// Extra handlers mounted on the API mux (status pages, boot files).
	Extra map[string]http.Handler
	// Started is called once the API listens, with the server (tests and the lab use it).
	Started func(*Server)
	// Admission is the registration policy: who is admitted, how many, how fast.
	Admission api.Admission
	// Power configures power commands and the leader's power recovery (powerops.go).
	Power PowerOptions
	// Swarm tunes the leader's day-two swarm keeper (swarmkeeper.go); its DomainLabel is
	// Plan's.
	Swarm SwarmKeeperOptions
}

// RunDaemon runs a coordinator until ctx ends, then shuts it down cleanly.
func RunDaemon(ctx context.Context, dc DaemonConfig) error {
	if dc.APIAddr == "" {
		dc.APIAddr = ":7443"
	}
	s, err := New(ctx, dc.Server)
	if err != nil {
		return err
	}
	defer func() {
		if err := s.Shutdown(); err != nil {
			s.log.Warn("raft shutdown", "err", err)
		}
	}()
	if dc.Plan.Settle == 0 {
		dc.Plan.Settle = 5 * time.Second
	}
	if dc.Plan.MaxWait == 0 {
		dc.Plan.MaxWait = time.Minute
	}
	if dc.ImageDir == "" {
		dc.ImageDir = filepath.Join(s.cfg.DataDir, "images")
	}
	// One throttle for the API and the pages: a guesser gets one budget on this coordinator.
	throttle := auth.NewThrottle(auth.ThrottleConfig{})
	if s.cfg.Registry != nil {
		s.cfg.Registry.MustRegister(throttle.Collectors()...)
	}
	powerMgr := s.powerManager(dc.Power)
	s.power = powerMgr
	pages := status.New(status.Config{Backend: s, Gatherer: s.cfg.Registry, Kick: s.Kick, Logger: s.log, Throttle: throttle,
		FailureDomainLabel: dc.Plan.Placement.DomainLabel, Power: powerMgr})
	defer pages.Close() // ends live streams, which would otherwise hold up the HTTP shutdown
	if dc.Admission.Policy == shared.AdmitAuto {
		s.log.Warn("ADMISSION IS AUTOMATIC: every machine that registers is admitted and gets a role, the gossip key "+
			"and Swarm join tokens (--admit auto). Fine for a lab; on a real network use --admit expected.",
			"admit", "auto")
	}
	mounts := withMounts(pages.Mounts(), dc.Extra)
	mounts["POST "+shared.PathClusterCertify] = http.HandlerFunc(s.handleCertify)
	handler := s.requireNodeCert(s.metrics.countImages(api.New(api.Config{Store: s.store, Writer: s, Leader: s, Cluster: s, Node: s, Planner: dryRunner{dc.Plan.Placement},
		ImageDir: dc.ImageDir, Logger: s.log, Registry: s.cfg.Registry, Extra: mounts, Pprof: dc.Pprof,
		Admission: dc.Admission, Throttle: throttle, Power: powerMgr, AgentBoot: s})))
	ln, err := net.Listen("tcp", dc.APIAddr)
	if err != nil {
		return fmt.Errorf("API listen on %s: %w", dc.APIAddr, err)
	}
	srv := &http.Server{Handler: handler, TLSConfig: s.TLSConfig(), ReadHeaderTimeout: 10 * time.Second,
		// Agents poll every 15 s on a connection each; one idle for minutes is gone.
		IdleTimeout: 2 * time.Minute,
		HTTP2:       apiHTTP2Config(),
		ErrorLog:    slog.NewLogLogger(s.log.With("component", "http").Handler(), slog.LevelDebug)}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	s.log.Info("coordinator API listening", "addr", ln.Addr().String(), "node", s.cfg.NodeID)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.metrics.observeSteps(ctx, s.store)
	if dc.Power.Recover.After > 0 {
		go s.runPowerRecovery(ctx, powerMgr, dc.Power.Recover)
	}
	s.keeper = dc.Swarm
	s.keeper.DomainLabel = dc.Plan.Placement.DomainLabel
	go s.RunLeaderLoop(ctx, dc.APIAddr, func(c context.Context) { s.PlanFleet(c, dc.Plan) })
	if len(s.cfg.Join) > 0 {
		if err := s.JoinCluster(ctx, dc.APIAddr); err != nil {
			return err
		}
	}
	background := make(chan error, 2)
	go func() { background <- s.runServices(ctx, dc) }()
	if dc.Started != nil {
		dc.Started(s)
	}
	select {
	case <-ctx.Done():
	case err := <-background:
		if err != nil {
			_ = srv.Close()
			return err
		}
		<-ctx.Done()
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("API server: %w", err)
		}
	}
	if p := s.pool(); p != nil {
		_ = p.(*membership.Pool).Leave()
		_ = p.(*membership.Pool).Shutdown()
	}
	s.log.Info("coordinator shutting down")
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	pages.Close()
	_ = srv.Shutdown(shutdownCtx)
	return nil
}

// runServices starts what needs the replicated cluster secrets: gossip (the key) and
// the boot services (the CA fingerprint and boot tickets for the agent's kernel line).
// It returns when ctx ends, or early with the error of a service that could not start.
func (s *Server) runServices(ctx context.Context, dc DaemonConfig) error {
	if err := s.WaitReady(ctx); err != nil {
		return nil // shutting down before the cluster was ready
	}
	if dc.GossipAddr != "off" {
		if _, err := s.startGossip(ctx, orDefault(dc.GossipAddr, ":7946"), dc.APIAddr); err != nil {
			return fmt.Errorf("gossip: %w", err)
		}
	} else {
		s.gossipOff.Store(true)
		if err := s.publishOwnRecord(ctx, dc.APIAddr); err != nil {
			s.log.Warn("publishing addresses", "err", err)
		}
	}
	if dc.Netboot == nil {
		return nil
	}
	nb := *dc.Netboot
	nb.Booter, nb.APIURLs, nb.CAFingerprint, nb.Tickets = s, s.APIURLs, s.CAFingerprint, s
	if nb.ServerIP == nil {
		nb.ServerIP = net.ParseIP(s.cfg.Advertise)
	}
	if nb.BootDir == "" {
		nb.BootDir = filepath.Join(s.cfg.DataDir, "boot")
	}
	if nb.Logger == nil {
		nb.Logger = s.log // netboot names its parts itself (component=netboot, dhcp, tftp)
	}
	s.metrics.wireNetboot(&nb)
	boot, err := netboot.NewServer(nb)
	if err != nil {
		return fmt.Errorf("boot services: %w", err)
	}
	s.bootServices.Store(boot)
	s.log.Info("boot services starting", "mode", nb.Mode, "interface", nb.Interface, "http", nb.HTTPAddr, "dir", nb.BootDir)
	if err := boot.Run(ctx); err != nil && ctx.Err() == nil {
		return fmt.Errorf("boot services: %w", err)
	}
	return nil
}

// withMounts adds the caller's extra handlers to ours (the status pages); the caller's
// handler for the same pattern wins.
func withMounts(ours, extra map[string]http.Handler) map[string]http.Handler {
	for pattern, h := range extra {
		ours[pattern] = h
	}
	return ours
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// apiHTTP2Config is the API server's HTTP/2 configuration.
// Every machine of the fleet holds a connection: keep each small. Rivet's response
// headers are a content type and a length, so a small encoder table loses nothing.
// The decoder's table stays at the protocol's 4096: a client may send its first
// requests before it has read a smaller SETTINGS_HEADER_TABLE_SIZE, and the server
// then rejects them with COMPRESSION_ERROR (RFC 9113 6.5.2 warns of exactly this;
// seen in CI when a fresh client opened many streams at once).
func apiHTTP2Config() *http.HTTP2Config {
	return &http.HTTP2Config{MaxEncoderHeaderTableSize: 1024}
}
