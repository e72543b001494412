package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
)

func runLab(ctx context.Context, env *Env, args []string) error {
	return subcommand(ctx, env, "lab", args, map[string]command{
		"up":   {"start a coordinator with its embedded store (VMs come with the network-boot work)", labUp},
		"down": {"remove the lab's data", labDown},
	})
}

func labDir() string {
	if d := os.Getenv("RIVET_LAB_DIR"); d != "" {
		return d
	}
	return filepath.Join("build", "lab")
}

func labUp(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "lab up", "rivet lab up [--api-addr ADDR]")
	apiAddr := fs.String("api-addr", "127.0.0.1:7443", "coordinator API address")
	if err := parse(fs, args); err != nil {
		return err
	}
	dir, err := filepath.Abs(labDir())
	if err != nil {
		return err
	}
	logger, err := newLogger(env, "text", "info")
	if err != nil {
		return err
	}
	dc := coordinator.DaemonConfig{
		Server:  coordinator.Config{DataDir: filepath.Join(dir, "coordinator"), NodeID: "lab", RaftAddr: "127.0.0.1:7400", Logger: logger},
		APIAddr: *apiAddr,
		Started: func(s *coordinator.Server) {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := s.WaitReady(wctx); err != nil {
				fmt.Fprintf(env.Stderr, "lab: %v\n", err)
				return
			}
			envFile := filepath.Join(dir, "coordinator", "operator.env")
			fmt.Fprintf(env.Stdout, "\nRivet lab coordinator is up (embedded single-node store).\n"+
				"  API:         https://%s\n  credentials: %s\n  try:         bin/rivet health --env-file %s\n"+
				"               bin/rivet machines ls --env-file %s\nPress Ctrl-C to stop.\n", *apiAddr, envFile, envFile, envFile)
		},
	}
	return coordinator.RunDaemon(ctx, dc)
}

func labDown(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "lab down", "rivet lab down")
	if err := parse(fs, args); err != nil {
		return err
	}
	dir := labDir()
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "lab removed (%s)\n", dir)
	return nil
}
