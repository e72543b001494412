// Command rivet-agent is Rivet's machine agent. As PID 1 in the Rivet initramfs it
// prepares the machine (filesystems, drivers, DHCP), registers it and runs the RAM phase
// of its plan (disk, image, boot config, reboot). Under systemd on the installed OS it
// checks in ("first disk boot") and runs the disk phase (the swarm step).
//
//	rivet-agent [run] [--mode=ram|service] [flags]   the agent (the default subcommand)
//	rivet-agent inventory [--system-uuid=...]        print this machine's inventory as JSON
//	rivet-agent bench inventory [--runs=N]           time the inventory against lshw
//	rivet-agent version                              print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rivetmetal/rivet/agent/boot"
	"github.com/rivetmetal/rivet/shared"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	args := os.Args[1:]
	if boot.IsPID1() {
		// As /init, argv holds whatever the kernel did not understand on its command line
		// (iPXE on EFI puts the image name there): the agent only ever runs, and PID 1
		// must never exit.
		args = []string{"run"}
	}
	err := run(ctx, args, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rivet-agent:", err)
		os.Exit(1)
	}
}

const usage = `Usage: rivet-agent <command> [flags]

Commands:
  run               run the agent (default; RAM mode when PID 1, else service mode)
  inventory         print this machine's inventory as JSON
  bench inventory   time the inventory collection against lshw -json
  version           print the version

Flags without a command are run's. Run "rivet-agent <command> --help" for a command's flags.
`

// run dispatches a subcommand; main is only signals and the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 && isHelp(args[0]) {
		cmd = "help" // the commands, not only run's flags: `rivet-agent run --help` has those
	}
	switch cmd {
	case "run":
		return runAgent(ctx, args, stderr)
	case "inventory":
		return runInventory(ctx, args, stdout, stderr)
	case "bench":
		return runBench(ctx, args, stdout, stderr)
	case "version":
		fs := flag.NewFlagSet("version", flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.Usage = func() { fmt.Fprintln(stderr, "Usage: rivet-agent version\n\nPrint the version.") }
		if err := fs.Parse(args); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "rivet-agent", shared.Version)
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}
