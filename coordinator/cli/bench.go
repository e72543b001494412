package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rivetmetal/rivet/coordinator/bench"
)

func benchVerbs() map[string]command {
	return map[string]command{
		"store":  {summary: "committed writes/s and commit latency: Rivet 1 and 3 nodes vs a 3-member etcd", run: benchStore},
		"image":  {summary: "image step MB/s vs curl | zstd -d | dd oflag=direct on the same loop device (root)", run: benchImage},
		"boot":   {summary: "TFTP vs tftpd-hpa, proxyDHCP vs dnsmasq, HTTP boot vs nginx (root)", run: benchBoot},
		"status": {summary: "fleet page render time at 10,000 machines, and live updates/s to 100 stream clients", run: benchStatus},
		"fleet":  {summary: "N simulated machines through a real 3-coordinator cluster to ready, with faults (partition: root)", run: benchFleet},
	}
}

func benchStore(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "bench store", "rivet bench store [--writes N] [--rounds N] [--clients N] [--cpu-profile DIR]")
	writes := fs.Int("writes", 5000, "committed writes per system and round")
	rounds := fs.Int("rounds", 3, "rounds; each measures every system once, in a rotating order, and the ratio is their median")
	clients := fs.Int("clients", 64, "concurrent writers")
	profile := fs.String("cpu-profile", "", "write a 5 s CPU profile of each node of the 3-node cluster, taken under load, to `DIR` (use --writes 30000 so the load lasts)")
	if err := parse(fs, args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *writes < 1 || *rounds < 1 || *clients < 1 {
		return errors.New("bench store: --writes, --rounds and --clients must each be at least 1")
	}
	_, err = bench.Store(ctx, env.Stdout, bench.StoreOptions{RivetBin: self, Writes: *writes, Rounds: *rounds,
		Clients: *clients, ProfileDir: *profile})
	return err
}

func benchImage(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "bench image", "rivet bench image")
	if err := parse(fs, args); err != nil {
		return err
	}
	return bench.Image(ctx, env.Stdout, bench.ImageOptions{})
}

func benchBoot(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "bench boot", "rivet bench boot")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := bench.TFTP(ctx, env.Stdout, bench.TFTPOptions{}); err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	if err := bench.DHCP(ctx, env.Stdout, bench.DHCPOptions{}); err != nil {
		return fmt.Errorf("proxydhcp: %w", err)
	}
	if err := bench.HTTP(ctx, env.Stdout, bench.HTTPOptions{}); err != nil {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

func benchStatus(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "bench status", "rivet bench status [--machines N] [--clients N] [--reports N] [--duration D]")
	machines := fs.Int("machines", 10000, "fleet size")
	clients := fs.Int("clients", 100, "connected event-stream clients")
	reports := fs.Int("reports", 5000, "progress reports applied per second during the stream run")
	duration := fs.Duration("duration", 10*time.Second, "length of the stream run")
	if err := parse(fs, args); err != nil {
		return err
	}
	_, err := bench.Status(ctx, env.Stdout, bench.StatusOptions{Machines: *machines, Clients: *clients,
		Reports: *reports, Duration: *duration})
	return err
}

func benchFleet(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "bench fleet", "rivet bench fleet [--coordinators 3] [--machines N] [--kill-leader] [--partition] [--restart-all] [--burst 1000]")
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
	if err := parse(fs, args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	o.RivetBin = self
	_, err = bench.Fleet(ctx, env.Stdout, o)
	return err
}
