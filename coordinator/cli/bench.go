package cli

import (
	"context"
	"os"

	"github.com/rivetmetal/rivet/coordinator/bench"
)

func runBench(ctx context.Context, env *Env, args []string) error {
	return subcommand(ctx, env, "bench", args, map[string]command{
		"store": {"committed writes/s and commit latency: Rivet 1 and 3 nodes vs a 3-member etcd", benchStore},
	})
}

func benchStore(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "bench store", "rivet bench store [--writes N] [--clients N]")
	writes := fs.Int("writes", 5000, "committed writes per system")
	clients := fs.Int("clients", 64, "concurrent writers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	_, err = bench.Store(ctx, env.Stdout, bench.StoreOptions{RivetBin: self, Writes: *writes, Clients: *clients})
	return err
}
