package inventory

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

func TestRunBench(t *testing.T) {
	testenv.RequireCommand(t, "lshw")
	var out bytes.Buffer
	if err := RunBench(context.Background(), &out, 1); err != nil {
		t.Fatalf("RunBench: %v\n%s", err, out.String())
	}
	figure := regexp.MustCompile(`(?m)^rivet-figure: inventory runs=1 rivet_median_ms=([0-9.]+) .*lshw_median_ms=([0-9.]+) .*speedup=([0-9.]+)x$`)
	m := figure.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no rivet-figure line in:\n%s", out.String())
	}
	for _, v := range m[1:] {
		if f, err := strconv.ParseFloat(v, 64); err != nil || f <= 0 {
			t.Errorf("figure %q is not a positive number", v)
		}
	}
	t.Log(out.String())
}

func TestRunBenchRefusesZeroRuns(t *testing.T) {
	if err := RunBench(context.Background(), &bytes.Buffer{}, 0); err == nil {
		t.Error("RunBench with 0 runs succeeded")
	}
}

func TestQuantiles(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, tt := range []struct {
		in          []time.Duration
		median, p95 time.Duration
	}{
		{ms(7), 7 * time.Millisecond, 7 * time.Millisecond},
		{ms(4, 2), 3 * time.Millisecond, 4 * time.Millisecond},
		{ms(5, 1, 3), 3 * time.Millisecond, 5 * time.Millisecond},
		{ms(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 10500 * time.Microsecond, 19 * time.Millisecond},
	} {
		median, p95 := quantiles(tt.in)
		if median != tt.median || p95 != tt.p95 {
			t.Errorf("quantiles(%v) = %v, %v; want %v, %v", tt.in, median, p95, tt.median, tt.p95)
		}
	}
}
