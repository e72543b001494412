package testenv

import (
	"log/slog"
	"strings"
	"testing"
)

func TestRepeatedKeys(t *testing.T) {
	var b strings.Builder
	log := slog.New(slog.NewJSONHandler(&b, nil))
	log.With("component", "netboot").Info("fine", "n", 1, "g", slog.GroupValue(slog.Int("a", 1), slog.Int("b", 2)))
	if got := RepeatedKeys(b.String()); len(got) != 0 {
		t.Fatalf("a line without repeats: %q", got)
	}
	b.Reset()
	log.With("component", "netboot").With("component", "netboot").Info("twice")
	log.With("g", slog.GroupValue(slog.Int("a", 1), slog.Int("a", 2))).Info("twice in a group")
	got := RepeatedKeys(b.String())
	if len(got) != 2 || !strings.HasPrefix(got[0], "component: ") || !strings.HasPrefix(got[1], "g.a: ") {
		t.Errorf("RepeatedKeys = %q, want component, then g.a", got)
	}
	if got := RepeatedKeys("not json\n"); len(got) != 1 || !strings.Contains(got[0], "not JSON") {
		t.Errorf("a line that is not JSON: %q", got)
	}
}
