package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/powerctl"
	"github.com/rivetmetal/rivet/internal/memlimit"
	"github.com/rivetmetal/rivet/shared"
)

func runCoordinator(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "coordinator", "rivet coordinator --data-dir DIR [--join URL [--token-file FILE] [--ca-fingerprint FP]]")
	var cfg coordinator.Config
	var dc coordinator.DaemonConfig
	fs.StringVar(&cfg.DataDir, "data-dir", "/var/lib/rivet-coordinator", "where the Raft log, snapshots and operator.env live")
	fs.StringVar(&cfg.NodeID, "node-id", "", "this coordinator's id (default: kept in DATA_DIR/node-id, first set from the host name)")
	fs.StringVar(&dc.APIAddr, "api-addr", ":7443", "HTTPS API listen address (all interfaces by default: agents, boot scripts and the local CLI use it)")
	fs.StringVar(&cfg.RaftAddr, "raft-addr", "", "Raft listen address, mutual TLS with the cluster CA (default ADVERTISE:7400)")
	fs.StringVar(&cfg.Advertise, "advertise", "127.0.0.1", "IP other coordinators and agents reach this one at")
	join := fs.String("join", "", "API URL(s) of an existing cluster to join, comma-separated")
	var jf joinFlags
	fs.StringVar(&jf.token, "token", "", "admin token of the cluster to join: every user sees it in ps, prefer env RIVET_TOKEN or --token-file")
	fs.StringVar(&jf.tokenFile, "token-file", "", "file holding the admin token of the cluster to join")
	fs.StringVar(&jf.caFingerprint, "ca-fingerprint", "", "CA fingerprint of the cluster to join (env RIVET_CA_FINGERPRINT)")
	fs.StringVar(&jf.envFile, "env-file", "", "read RIVET_TOKEN and RIVET_CA_FINGERPRINT of the cluster to join from this file (a copy of its operator.env)")
	fs.StringVar(&dc.ImageDir, "image-dir", "", "directory of OS images served at /v1/images/ (default DATA_DIR/images)")
	fs.Uint64Var(&cfg.TrailingLogs, "raft-trailing-logs", 4096, "log entries kept after a snapshot")
	fs.IntVar(&dc.Plan.Placement.FiveAbove, "five-managers-above", 50, "a Swarm of more machines than this gets 5 managers instead of 3")
	fs.StringVar(&dc.Plan.Placement.DomainLabel, "failure-domain-label", "rack", "machine label that names a failure domain for manager placement")
	fs.DurationVar(&dc.Plan.Settle, "plan-settle", 5*time.Second, "plan once no new machine was discovered for this long (a rack powering on is planned as one fleet)")
	fs.DurationVar(&dc.Plan.MaxWait, "plan-max-wait", time.Minute, "plan at the latest this long after a machine was discovered")
	fs.BoolVar(&cfg.FastElections, "fast-elections", false, "shorter Raft timeouts (loopback test clusters)")
	fs.StringVar(&dc.GossipAddr, "gossip-addr", ":7946", "Serf gossip bind address (UDP and TCP); \"off\" disables gossip")
	boot := bootFlags(fs)
	admit := fs.String("admit", "expected", "which registering machines are admitted (get a role and the cluster's secrets): "+
		"\"expected\" (only machines on the imported list, or approved by an operator) or \"auto\" (every machine: labs only)")
	fs.IntVar(&dc.Admission.MaxMachines, "max-machines", 100000, "refuse new machines beyond this many (0: no limit)")
	fs.Float64Var(&dc.Admission.RegisterRate, "register-rate", 100, "registrations a second per enrolment token (per source address for boot tickets); 0: no limit")
	fs.IntVar(&dc.Admission.RegisterBurst, "register-burst", 1000, "registrations per credential allowed at once before --register-rate applies")
	memLimit := fs.String("memory-limit", memlimit.Auto, "soft limit for the Go heap, e.g. 420MiB: the garbage collector works harder near it (\"auto\": 90% of the cgroup's memory limit if it has one; \"off\")")
	fs.DurationVar(&dc.Power.Recover.After, "power-recover-after", powerctl.DefaultRecoverAfter,
		"power-cycle (PXE once) a machine with a BMC that has not checked in this long after a reboot (0: never)")
	fs.IntVar(&dc.Power.Recover.Attempts, "power-recover-attempts", powerctl.DefaultRecoverAttempts,
		"power cycles for one reboot before the machine is failed with the reason")
	fs.IntVar(&dc.Power.DriverOptions.IPMICipherSuite, "ipmi-cipher-suite", 0,
		"RMCP+ cipher suite for IPMI BMCs (0: ask each BMC and try what it offers; 3 or 17 to skip the probing)")
	fs.DurationVar(&dc.Power.DriverOptions.SoftOffTimeout, "power-soft-off-timeout", powerctl.DefaultSoftOffTimeout,
		"how long a power off waits for the OS to shut down after the soft-off (ACPI) before it cuts the power")
	fs.DurationVar(&dc.Power.Timeout, "power-timeout", powerctl.DefaultTimeout, "bound on one power command to a BMC (soft-off included)")
	fs.DurationVar(&dc.Swarm.LostGrace, "swarm-lost-manager-grace", coordinator.DefaultLostManagerGrace,
		"replace a swarm manager lost this long: promote a worker (in a rack without a manager if there is one), then demote and remove the lost one (0: never)")
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
	if jf.token != "" {
		logger.Warn("--token shows the admin token to every user of this host (ps, /proc): pass it in RIVET_TOKEN or --token-file")
	}
	if cfg.JoinToken, cfg.CAFingerprint, err = jf.credentials(); err != nil {
		return err
	}
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
	if *admit != shared.AdmitExpected && *admit != shared.AdmitAuto {
		return fmt.Errorf("--admit %q: want expected or auto", *admit)
	}
	dc.Admission.Policy = *admit
	dc.Server = cfg
	if dc.Netboot, err = boot.config(cfg.Advertise); err != nil {
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

// joinFlags say where the credentials of the cluster to join come from: flags, then the
// environment, then the env file. The token is best kept out of the command line.
type joinFlags struct {
	token, tokenFile, caFingerprint, envFile string
}

func (j joinFlags) credentials() (token, caFingerprint string, err error) {
	if j.token != "" && j.tokenFile != "" {
		return "", "", fmt.Errorf("--token and --token-file: give one")
	}
	var file shared.OperatorCredentials
	if j.envFile != "" {
		if file, err = readEnvFile(j.envFile); err != nil {
			return "", "", err
		}
	}
	if j.tokenFile != "" {
		if j.token, err = readTokenFile(j.tokenFile); err != nil {
			return "", "", err
		}
	}
	return firstSet(j.token, os.Getenv(shared.EnvToken), file.Token),
		firstSet(j.caFingerprint, os.Getenv(shared.EnvCAFingerprint), file.CAFingerprint), nil
}

func readTokenFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" || strings.ContainsAny(token, " \t\n") {
		return "", fmt.Errorf("--token-file %s: want the admin token alone (rvo_...)", path)
	}
	return token, nil
}

func firstSet(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
