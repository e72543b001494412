// Command rivet-bench measures Rivet against reference tools (see package bench and
// BENCHMARKS.md). It is a binary of its own so that the coordinator, which operators
// install, links neither the agent's steps nor the test harnesses the benches drive.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/bench"
	"github.com/rivetmetal/rivet/internal/bmcfarm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) { // --help is not a failure
		fmt.Fprintln(os.Stderr, "rivet-bench:", err)
		os.Exit(1)
	}
}

// benchCmd is one bench: its summary for the usage text and how it runs.
type benchCmd struct {
	summary string
	run     func(ctx context.Context, stdout io.Writer, fs *flag.FlagSet, args []string) error
}

var benches = map[string]benchCmd{
	"store":  {"committed writes/s and commit latency: Rivet 1 and 3 nodes vs a 3-member etcd", runStore},
	"image":  {"image step MB/s vs curl | zstd -d | dd oflag=direct on the same loop device (root)", runImage},
	"boot":   {"TFTP vs tftpd-hpa, proxyDHCP vs dnsmasq, HTTP boot vs nginx (root)", runBoot},
	"status": {"fleet page render time at 10,000 machines, and live updates/s to 100 stream clients", runStatus},
	"fleet":  {"N simulated machines through a real 3-coordinator cluster to ready, with faults (partition: root)", runFleet},
	"power":  {"power N BMCs on: Rivet's batched IPMI fan-out vs a shell for loop of ipmitool (and xargs -P)", runPower},
}

func usage(w io.Writer) {
	fmt.Fprint(w, "Usage: rivet-bench <bench> [flags]\n\nBenches:\n")
	names := make([]string, 0, len(benches))
	for name := range benches {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-8s %s\n", name, benches[name].summary)
	}
	fmt.Fprint(w, "\nRun \"rivet-bench <bench> --help\" for a bench's flags. The agent's inventory bench is `rivet-agent bench inventory`.\n")
}

// run dispatches a bench; main is only signals and the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return errors.New("which bench?")
		}
		return nil
	}
	if args[0] == "bmcfarm" {
		// Not a bench: the BMC farm the power bench runs as its child, so that the BMCs'
		// CPU is not counted as Rivet's. Hidden from the usage text.
		return bmcfarm.Main(ctx, args[1:], os.Stdin, stdout, stderr)
	}
	b, ok := benches[args[0]]
	if !ok {
		usage(stderr)
		return fmt.Errorf("unknown bench %q", args[0])
	}
	fs := flag.NewFlagSet("rivet-bench "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: rivet-bench %s [flags]\n\n%s.\n\nFlags:\n", args[0], b.summary)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	return b.run(ctx, stdout, fs, args[1:])
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// rivetFlag is the coordinator binary the store and fleet benches run.
func rivetFlag(fs *flag.FlagSet) *string {
	return fs.String("rivet", "", "the `rivet` binary to run coordinators from (default: rivet next to rivet-bench, else on PATH)")
}

// rivetBinary resolves --rivet: the rivet built beside this binary (make build puts both
// in bin/), else the one on PATH.
func rivetBinary(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), "rivet")
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	path, err := exec.LookPath("rivet")
	if err != nil {
		return "", errors.New("no rivet binary beside rivet-bench or on PATH: build it (make build) or pass --rivet")
	}
	return path, nil
}

func runStore(ctx context.Context, stdout io.Writer, fs *flag.FlagSet, args []string) error {
	bin := rivetFlag(fs)
	writes := fs.Int("writes", 5000, "committed writes per system and round")
	rounds := fs.Int("rounds", 3, "rounds; each measures every system once, in a rotating order, and the ratio is their median")
	clients := fs.Int("clients", 64, "concurrent writers")
	profile := fs.String("cpu-profile", "", "write a 5 s CPU profile of each node of the 3-node cluster, taken under load, to `DIR` (use --writes 30000 so the load lasts)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *writes < 1 || *rounds < 1 || *clients < 1 {
		return errors.New("store: --writes, --rounds and --clients must each be at least 1")
	}
	rivet, err := rivetBinary(*bin)
	if err != nil {
		return err
	}
	_, err = bench.Store(ctx, stdout, bench.StoreOptions{RivetBin: rivet, Writes: *writes, Rounds: *rounds,
		Clients: *clients, ProfileDir: *profile})
	return err
}

func runImage(ctx context.Context, stdout io.Writer, fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	return bench.Image(ctx, stdout, bench.ImageOptions{})
}

func runBoot(ctx context.Context, stdout io.Writer, fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := bench.TFTP(ctx, stdout, bench.TFTPOptions{}); err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	if err := bench.DHCP(ctx, stdout, bench.DHCPOptions{}); err != nil {
		return fmt.Errorf("proxydhcp: %w", err)
	}
	if err := bench.HTTP(ctx, stdout, bench.HTTPOptions{}); err != nil {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

func runStatus(ctx context.Context, stdout io.Writer, fs *flag.FlagSet, args []string) error {
	machines := fs.Int("machines", 10000, "fleet size")
	clients := fs.Int("clients", 100, "connected event-stream clients")
	reports := fs.Int("reports", 5000, "progress reports applied per second during the stream run")
	duration := fs.Duration("duration", 10*time.Second, "length of the stream run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	_, err := bench.Status(ctx, stdout, bench.StatusOptions{Machines: *machines, Clients: *clients,
		Reports: *reports, Duration: *duration})
	return err
}

func runFleet(ctx context.Context, stdout io.Writer, fs *flag.FlagSet, args []string) error {
	bin := rivetFlag(fs)
	var o bench.FleetOptions
	fs.IntVar(&o.Coordinators, "coordinators", 3, "coordinator processes")
	fs.IntVar(&o.Machines, "machines", 200, "simulated machines")
	fs.IntVar(&o.SerfMembers, "serf-members", 100, "how many machines join the Serf pool (the rest only poll); this 2-core box holds ~200 in one process")
	fs.DurationVar(&o.Ramp, "ramp", 30*time.Second, "machines power on evenly over this long")
	fs.DurationVar(&o.Poll, "poll", 15*time.Second, "the agents' poll interval")
	fs.Float64Var(&o.StepScale, "step-scale", 1, "multiply the simulated step durations (disk 3s, image 20s, reboot 30s, swarm 3s)")
	fs.BoolVar(&o.KillLeader, "kill-leader", false, "SIGKILL the leader while machines write images, restart it 5 s later")
	fs.BoolVar(&o.Partition, "partition", false, "cut a follower off the bridge, check it refuses writes, heal (implies --netns; root)")
	fs.DurationVar(&o.PartitionHold, "partition-hold", 20*time.Second, "how long the partition lasts")
	fs.BoolVar(&o.RestartAll, "restart-all", false, "SIGKILL every coordinator once a quarter of the fleet is ready, restart them")
	fs.IntVar(&o.Burst, "burst", 0, "this many machines power on in the same instant before the ramp (the issue asks 1000)")
	fs.BoolVar(&o.Netns, "netns", false, "coordinators in network namespaces on a bridge (root)")
	fs.StringVar(&o.Subnet, "subnet", "10.232.101", "the bridge's /24 with --netns")
	fs.StringVar(&o.PprofDir, "pprof-dir", "", "save each coordinator's CPU profile (busiest 20 s) and heap profile to `DIR`")
	fs.BoolVar(&o.Keep, "keep", false, "keep the coordinators' data dirs and logs")
	fs.StringVar(&o.MemoryLimit, "memory-limit", "", "the coordinators' --memory-limit, e.g. 420MiB (default: theirs, auto)")
	fs.DurationVar(&o.Timeout, "timeout", 20*time.Minute, "give up when the fleet is not ready by then")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rivet, err := rivetBinary(*bin)
	if err != nil {
		return err
	}
	o.RivetBin = rivet
	_, err = bench.Fleet(ctx, stdout, o)
	return err
}

func runPower(ctx context.Context, stdout io.Writer, fs *flag.FlagSet, args []string) error {
	var o bench.PowerOptions
	fs.IntVar(&o.BMCs, "bmcs", 200, "BMCs in the farm (one process of go-ipmi's reference BMC), each switched on by every method")
	fs.IntVar(&o.Batch, "batch", 20, "Rivet's fan-out width, and xargs -P")
	fs.StringVar(&o.IPMITool, "ipmitool", "ipmitool", "the ipmitool binary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	_, err := bench.Power(ctx, stdout, o)
	return err
}
