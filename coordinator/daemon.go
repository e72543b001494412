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
)

// DaemonConfig is a whole coordinator process: the server plus its listeners.
type DaemonConfig struct {
	Server   Config
	APIAddr  string // HTTPS listen address
	ImageDir string // OS images served under /v1/images/; default DATA_DIR/images
	// Plan tunes the leader's planning pass (settle time, manager placement).
	Plan PlanOptions
	// Extra handlers mounted on the API mux (status pages, boot files).
	Extra map[string]http.Handler
	// Started is called once the API listens, with the server (tests and the lab use it).
	Started func(*Server)
}

// RunDaemon runs a coordinator until ctx ends, then shuts it down cleanly.
func RunDaemon(ctx context.Context, dc DaemonConfig) error {
	if dc.APIAddr == "" {
		dc.APIAddr = ":7443"
	}
	dc.Server.RaftAddr = orDefault(dc.Server.RaftAddr, ":7400")
	s, err := New(dc.Server)
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
	handler := api.New(api.Config{Backend: s, Planner: dryRunner{dc.Plan.Placement}, ImageDir: dc.ImageDir,
		Logger: s.log, Registry: s.cfg.Registry, Extra: dc.Extra})
	ln, err := net.Listen("tcp", dc.APIAddr)
	if err != nil {
		return fmt.Errorf("API listen on %s: %w", dc.APIAddr, err)
	}
	srv := &http.Server{Handler: handler, TLSConfig: s.TLSConfig(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.With("component", "http").Handler(), slog.LevelDebug)}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	s.log.Info("coordinator API listening", "addr", ln.Addr().String(), "node", s.cfg.NodeID)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.RunLeaderLoop(ctx, dc.APIAddr, func(c context.Context) { s.PlanFleet(c, dc.Plan) })
	if len(s.cfg.Join) > 0 {
		if err := s.JoinCluster(ctx, dc.APIAddr); err != nil {
			return err
		}
	}
	if dc.Started != nil {
		dc.Started(s)
	}
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("API server: %w", err)
		}
	}
	s.log.Info("coordinator shutting down")
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = srv.Shutdown(shutdownCtx)
	return nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
