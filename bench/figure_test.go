package bench

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// benchFigure runs a bench for at most within, requires its output to match pattern
// and the figures pattern captures (the groups named by figures, every group when none
// is named) to be positive numbers, logs the output and returns it. How fast a figure
// is, is never a verdict.
func benchFigure(t *testing.T, within time.Duration, run func(context.Context, *bytes.Buffer) error,
	pattern string, figures ...int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(pattern)
	m := line.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output %q does not match %s", out.String(), line)
	}
	if len(figures) == 0 {
		for i := 1; i < len(m); i++ {
			figures = append(figures, i)
		}
	}
	for _, i := range figures {
		if v, err := strconv.ParseFloat(m[i], 64); err != nil || v <= 0 {
			t.Errorf("figure %q in %q is not a positive number", m[i], out.String())
		}
	}
	t.Log(out.String())
	return out.String()
}
