package integration

import (
	"cmp"
	"context"
	"testing"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/shared"
)

// startCluster starts real coordinators from the binaries TestMain built (opts.Bin is
// set here), fails the test if they do not come up, stops them when the test ends and,
// if it failed, logs the tail of their logs.
func startCluster(ctx context.Context, t *testing.T, opts coordinatortest.Options) *coordinatortest.Cluster {
	t.Helper()
	opts.Bin = cmp.Or(opts.Bin, bin("rivet")) // an upgrade test starts from an older release
	cluster, err := coordinatortest.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("coordinator logs (tail):\n%s", tail(cluster.Logs(), 8000))
		}
	})
	return cluster
}

// applyRoles applies the roles of a role file's text as the admin, failing the test on
// a parse error or a refusal.
func applyRoles(ctx context.Context, t *testing.T, admin *shared.Client, text string) {
	t.Helper()
	roles, err := shared.ParseRoles([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ApplyRoles(ctx, roles, false); err != nil {
		t.Fatal(err)
	}
}
