package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"time"

	"github.com/rivetmetal/rivet/agent"
	"github.com/rivetmetal/rivet/agent/boot"
	"github.com/rivetmetal/rivet/agent/config"
	"github.com/rivetmetal/rivet/agent/inventory"
	"github.com/rivetmetal/rivet/agent/kexec"
	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/swarm"
	"github.com/rivetmetal/rivet/shared"
)

// fatalRebootDelay is how long a RAM agent that cannot go on shows its error on the
// console before it reboots to try again. PID 1 must never exit: the kernel would panic.
const fatalRebootDelay = 2 * time.Minute

func runAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags := config.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rivet-agent run [flags]\n\n"+
			"Register this machine with the coordinator and carry out its plan.\n"+
			"Precedence: flags > config file > kernel command line (RAM mode) > defaults.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run takes no arguments, got %q", fs.Args())
	}
	pid1 := boot.IsPID1()
	bootLog := slog.New(slog.NewTextHandler(stderr, nil))
	var env *boot.Env
	cfg, err := flags.Load(pid1, func() (shared.BootParams, error) {
		if !pid1 {
			return config.ReadCmdline("/proc/cmdline")
		}
		var err error
		env, err = boot.Prepare(ctx, bootLog, nil)
		if err != nil {
			return shared.BootParams{}, err
		}
		return env.Params, nil
	})
	if err == nil {
		logOut := stderr
		if env != nil {
			logOut = env.Console
			defer env.Close()
		}
		log := newLogger(cfg, logOut)
		if flags.TokenOnCommandLine() {
			log.Warn("--token shows the enrolment token to every user of this host (ps, /proc): use --token-file or enrol_token_file: in " + config.DefaultFile)
		}
		err = serve(ctx, cfg, log, env)
	}
	if err != nil && pid1 {
		bootLog.Error("rivet-agent cannot go on; rebooting to try again", "err", err, "in", fatalRebootDelay)
		time.Sleep(fatalRebootDelay)
		return boot.Reboot()
	}
	return err
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Level()}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve wires the agent's parts and runs it.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, env *boot.Env) error {
	var ag *agent.Agent
	deps := agent.Deps{
		Inventory: func(ctx context.Context) *shared.Inventory {
			return inventory.Collect(ctx, inventory.Options{SystemUUID: cfg.SystemUUID, Logger: log.With("subsystem", "inventory")})
		},
		NewRunner: func(id shared.MachineID, client *shared.Client, rep agent.Reporter) agent.PhaseRunner {
			return step.NewRunner(step.RunnerConfig{
				ID: id, Reporter: rep, StateDir: cfg.StateDir, Logger: log.With("subsystem", "step"),
				Executors: executors(id, client, cfg.Mode, ag.AdvertiseIP(), cfg.DockerHost, ag, log),
			})
		},
		Logger: log,
	}
	if cfg.Mode == shared.ModeService {
		deps.NewSwarmOps = func(id shared.MachineID, client *shared.Client) agent.SwarmOpRunner {
			sw, err := swarm.New(swarm.Config{MachineID: id, Coordinator: client, AdvertiseAddr: ag.AdvertiseIP(),
				DockerHost: cfg.DockerHost, Logger: log})
			if err != nil {
				log.Error("swarm operations unavailable", "err", err)
				return nil
			}
			return sw
		}
		deps.BootAgent = func(ctx context.Context, id shared.MachineID, client *shared.Client) error {
			return bootAgent(ctx, id, client, log)
		}
	}
	if env != nil {
		deps.Progress = env.Progress
	}
	ag = agent.New(cfg, deps)
	return ag.Run(ctx)
}

func runInventory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inventory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	uuid := fs.String("system-uuid", "", "report this system UUID instead of the firmware's")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rivet-agent inventory [flags]\n\n"+
			"Print this machine's inventory as JSON, as the agent would register it.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	inv := inventory.Collect(ctx, inventory.Options{SystemUUID: *uuid, Logger: log})
	if id, err := shared.DeriveMachineID(inv); err == nil {
		fmt.Fprintf(stderr, "machine id %s (from %s)\n", id.ID, id.Basis)
	} else {
		fmt.Fprintln(stderr, "no machine id:", err)
	}
	return writeJSON(stdout, inv)
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "inventory" {
		fmt.Fprintln(stderr, "Usage: rivet-agent bench inventory [--runs=N]")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return fmt.Errorf("bench: want the inventory benchmark")
	}
	fs := flag.NewFlagSet("bench inventory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runs := fs.Int("runs", 10, "collections to time (each side)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rivet-agent bench inventory [flags]\n\n"+
			"Time the inventory collection against lshw -json on this machine.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	return inventory.RunBench(ctx, stdout, *runs)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// bootAgent kexecs into the Rivet agent; when the kernel refuses, it reboots through the
// firmware, which network-boots the agent (the machine's next boot is the agent's).
func bootAgent(ctx context.Context, id shared.MachineID, client *shared.Client, log *slog.Logger) error {
	l := kexec.Loader{Client: client, Logger: log}
	err := l.Boot(ctx, id)
	if !errors.Is(err, kexec.ErrLoad) {
		return err // the coordinator said no or could not be reached: nothing to reboot for yet
	}
	log.Warn("kexec failed; rebooting through the firmware instead", "err", err)
	if out, rerr := exec.CommandContext(ctx, "systemctl", "reboot").CombinedOutput(); rerr != nil {
		return fmt.Errorf("kexec: %v; systemctl reboot: %v: %s", err, rerr, out)
	}
	return nil
}
