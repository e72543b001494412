package cli

import (
	"context"
)

func runBench(ctx context.Context, env *Env, args []string) error {
	return subcommand(ctx, env, "bench", args, map[string]command{
		"store": {"committed writes/s and commit latency: Rivet 1 and 3 nodes vs a 3-member etcd", benchStore},
	})
}
