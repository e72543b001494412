package inventory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"time"
)

// RunBench times Collect against Debian's `lshw -json` on this machine, runs times each
// (interleaved, so both see the same caches and load), and prints median and p95 wall
// times side by side. Lines starting with "rivet-figure:" are collected into the
// project's benchmark table. Collect runs in-process, lshw as the process it always is:
// that is the comparison an operator makes when choosing an inventory tool.
func RunBench(ctx context.Context, w io.Writer, runs int) error {
	if runs < 1 {
		return fmt.Errorf("runs must be at least 1, got %d", runs)
	}
	lshw, err := exec.LookPath("lshw")
	if err != nil {
		return errors.New("lshw not found on PATH: the inventory bench compares against it; " +
			"install it with apt-get install lshw (or bash .ci/install-debs)")
	}
	var rivet, reference []time.Duration
	var last int
	for range runs {
		start := time.Now()
		inv := Collect(ctx, Options{})
		rivet = append(rivet, time.Since(start))
		last = len(inv.Errors)

		start = time.Now()
		cmd := exec.CommandContext(ctx, lshw, "-json")
		cmd.Stdout = io.Discard
		if out, err := cmdStderr(cmd); err != nil {
			return fmt.Errorf("lshw -json: %w: %s", err, out)
		}
		reference = append(reference, time.Since(start))
	}
	rMed, rP95 := quantiles(rivet)
	lMed, lP95 := quantiles(reference)
	fmt.Fprintf(w, "inventory: %d runs; rivet Collect in-process, lshw -json as a process; rivet section errors in the last run: %d\n", runs, last)
	fmt.Fprintf(w, "%-14s %10s %10s\n", "", "median", "p95")
	fmt.Fprintf(w, "%-14s %10s %10s\n", "rivet", fmtMillis(rMed), fmtMillis(rP95))
	fmt.Fprintf(w, "%-14s %10s %10s\n", "lshw -json", fmtMillis(lMed), fmtMillis(lP95))
	fmt.Fprintf(w, "rivet-figure: inventory runs=%d rivet_median_ms=%s rivet_p95_ms=%s rivet_first_ms=%s "+
		"lshw_median_ms=%s lshw_p95_ms=%s speedup=%.1fx\n", runs, fmtMillis(rMed), fmtMillis(rP95),
		fmtMillis(rivet[0]), fmtMillis(lMed), fmtMillis(lP95), float64(lMed)/float64(max(rMed, 1)))
	return nil
}

// cmdStderr runs cmd and returns what it wrote to stderr (for the error message).
func cmdStderr(cmd *exec.Cmd) (string, error) {
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return string(stderr.buf), err
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ buf []byte }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// quantiles returns the median and the 95th percentile (nearest rank).
func quantiles(ds []time.Duration) (median, p95 time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		median = s[n/2]
	} else {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	rank := (95*n + 99) / 100 // ceil(0.95 n)
	return median, s[max(rank-1, 0)]
}

func fmtMillis(d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond))
}
