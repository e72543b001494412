package api

import (
	"testing"
	"time"
)

func TestProgressGate(t *testing.T) {
	var g progressGate
	t0 := time.Unix(1_700_000_000, 0)
	every := progressEvery(100)
	if every != progressMinEvery || progressEvery(10_000) != 20*time.Second {
		t.Fatalf("interval: %s for 100 machines, %s for 10,000", every, progressEvery(10_000))
	}
	a := progressKey{"m-0000000000000001", "image", 1}
	if !g.allow(a, t0, every) {
		t.Fatal("the first progress of an attempt must pass")
	}
	if g.allow(a, t0.Add(every/2), every) {
		t.Fatal("a second progress within the interval must be held back")
	}
	if !g.allow(progressKey{"m-0000000000000001", "image", 2}, t0.Add(every/2), every) ||
		!g.allow(progressKey{"m-0000000000000002", "image", 1}, t0.Add(every/2), every) {
		t.Fatal("another attempt or machine has its own interval")
	}
	if !g.allow(a, t0.Add(every), every) {
		t.Fatal("progress must pass again once the interval is over")
	}
	g.allow(progressKey{"m-0000000000000003", "disk", 1}, t0.Add(10*every), every) // sweeps
	if len(g.last) != 1 {
		t.Fatalf("finished steps are not forgotten: %d entries", len(g.last))
	}
}
