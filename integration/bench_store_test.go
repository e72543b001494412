package integration

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/bench"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// TestStoreBenchMeasuresEverySystem runs a small `rivet-bench store`: Rivet with 1 and 3
// real coordinators and two real 3-member etcd clusters, in interleaved rounds. It
// proves the bench works and counts what it claims; the figures themselves are never
// asserted (BENCHMARKS.md has them).
func TestStoreBenchMeasuresEverySystem(t *testing.T) {
	testenv.RequireCommand(t, "etcd")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	const writes, rounds = 400, 2
	results, err := bench.Store(ctx, &out, bench.StoreOptions{RivetBin: bin("rivet"), Writes: writes, Rounds: rounds,
		Clients: 8, Dir: t.TempDir()})
	t.Logf("bench output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"rivet/1", "rivet/3", "etcd-https/3", "etcd/3"}
	if len(results) != len(want) {
		t.Fatalf("%d results, want %d (%v)", len(results), len(want), want)
	}
	for i, r := range results {
		if got := r.System + "/" + string(rune('0'+r.Nodes)); got != want[i] {
			t.Errorf("result %d is %s, want %s", i, got, want[i])
		}
		if r.Failed != 0 {
			t.Errorf("%s/%d: %d writes failed", r.System, r.Nodes, r.Failed)
		}
		if r.Writes != rounds*(writes+writes/4) || len(r.Rounds) != rounds {
			t.Errorf("%s/%d: %d writes in %d rounds, want %d in %d", r.System, r.Nodes, r.Writes, len(r.Rounds),
				rounds*(writes+writes/4), rounds)
		}
		if r.WritesPerSec <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.ServerCPU <= 0 || r.ClientCPU <= 0 {
			t.Errorf("%s/%d: implausible figures %+v", r.System, r.Nodes, r)
		}
	}
	if !strings.Contains(out.String(), "rivet-figure: store ratio rivet3_vs_etcd3 throughput=") {
		t.Errorf("no ratio line in the output")
	}
}
