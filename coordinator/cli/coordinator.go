package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/internal/memlimit"
)

func runCoordinator(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "coordinator", "rivet coordinator --data-dir DIR [--join URL --token TOKEN --ca-fingerprint FP]")
	var cfg coordinator.Config
	var dc coordinator.DaemonConfig
	fs.StringVar(&cfg.DataDir, "data-dir", "/var/lib/rivet-coordinator", "where the Raft log, snapshots and operator.env live")
	fs.StringVar(&cfg.NodeID, "node-id", "", "this coordinator's id (default: kept in DATA_DIR/node-id, first set from the host name)")
	fs.StringVar(&dc.APIAddr, "api-addr", ":7443", "HTTPS API listen address (all interfaces by default: agents, boot scripts and the local CLI use it)")
	fs.StringVar(&cfg.RaftAddr, "raft-addr", "", "Raft listen address, mutual TLS with the cluster CA (default ADVERTISE:7400)")
	fs.StringVar(&cfg.Advertise, "advertise", "127.0.0.1", "IP other coordinators and agents reach this one at")
	join := fs.String("join", "", "API URL(s) of an existing cluster to join, comma-separated")
	fs.StringVar(&cfg.JoinToken, "token", os.Getenv("RIVET_TOKEN"), "admin token of the cluster to join (env RIVET_TOKEN)")
	fs.StringVar(&cfg.CAFingerprint, "ca-fingerprint", os.Getenv("RIVET_CA_FINGERPRINT"), "CA fingerprint of the cluster to join (env RIVET_CA_FINGERPRINT)")
	fs.StringVar(&dc.ImageDir, "image-dir", "", "directory of OS images served at /v1/images/ (default DATA_DIR/images)")
	fs.Uint64Var(&cfg.TrailingLogs, "raft-trailing-logs", 4096, "log entries kept after a snapshot")
	fs.IntVar(&dc.Plan.Placement.FiveAbove, "five-managers-above", 50, "a Swarm of more machines than this gets 5 managers instead of 3")
	fs.StringVar(&dc.Plan.Placement.DomainLabel, "failure-domain-label", "rack", "machine label that names a failure domain for manager placement")
	fs.DurationVar(&dc.Plan.Settle, "plan-settle", 5*time.Second, "plan once no new machine was discovered for this long (a rack powering on is planned as one fleet)")
	fs.DurationVar(&dc.Plan.MaxWait, "plan-max-wait", time.Minute, "plan at the latest this long after a machine was discovered")
	fs.BoolVar(&cfg.FastElections, "fast-elections", false, "shorter Raft timeouts (loopback test clusters)")
	fs.StringVar(&dc.GossipAddr, "gossip-addr", ":7946", "Serf gossip bind address (UDP and TCP); \"off\" disables gossip")
	boot := bootFlags(fs)
	memLimit := fs.String("memory-limit", memlimit.Auto, "soft limit for the Go heap, e.g. 420MiB: the garbage collector works harder near it (\"auto\": 90% of the cgroup's memory limit if it has one; \"off\")")
	fs.BoolVar(&dc.Pprof, "debug-pprof", false, "serve Go's profiler at /debug/pprof/ (admin token)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(env, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	limit, err := memlimit.Parse(*memLimit)
	if err != nil {
		return fmt.Errorf("--memory-limit: %w", err)
	}
	memlimit.Apply(limit)
	if limit > 0 {
		logger.Info("go heap soft limit", "bytes", limit, "from", *memLimit)
	}
	if *join != "" {
		cfg.Join = strings.Split(*join, ",")
	}
	dc.Server = cfg
	if dc.Netboot, err = boot.config(); err != nil {
		return err
	}
	return coordinator.RunDaemon(ctx, dc)
}

func newLogger(env *Env, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(env.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
