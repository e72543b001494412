package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/rivetmetal/rivet/coordinator/bench"
)

func runBench(ctx context.Context, env *Env, args []string) error {
	return subcommand(ctx, env, "bench", args, map[string]command{
		"store":  {"committed writes/s and commit latency: Rivet 1 and 3 nodes vs a 3-member etcd", benchStore},
		"image":  {"image step MB/s vs curl | zstd -d | dd oflag=direct on the same loop device (root)", benchImage},
		"boot":   {"TFTP vs tftpd-hpa, proxyDHCP vs dnsmasq, HTTP boot vs nginx (root)", benchBoot},
		"status": {"fleet page render time at 10,000 machines, and live updates/s to 100 stream clients", benchStatus},
	})
}

func benchStore(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "bench store", "rivet bench store [--writes N] [--clients N] [--cpu-profile DIR]")
	writes := fs.Int("writes", 5000, "committed writes per system")
	clients := fs.Int("clients", 64, "concurrent writers")
	profile := fs.String("cpu-profile", "", "write a 5 s CPU profile of each node of the 3-node cluster, taken under load, to `DIR` (use --writes 40000 so the load lasts)")
	if err := parse(fs, args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	_, err = bench.Store(ctx, env.Stdout, bench.StoreOptions{RivetBin: self, Writes: *writes, Clients: *clients, ProfileDir: *profile})
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
