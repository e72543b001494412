package coordinator

import (
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

func TestPickRunner(t *testing.T) {
	ms := []shared.MachineID{"m-a", "m-b", "m-c"}
	for _, tc := range []struct {
		target, stalled, want shared.MachineID
	}{
		{"m-x", "", "m-a"},
		{"m-a", "", "m-b"},    // never the target itself
		{"m-x", "m-a", "m-b"}, // not the runner that stalled
		{"m-b", "m-a", "m-c"}, // neither
		{"m-x", "m-z", "m-a"}, // a stalled runner that is gone
	} {
		if got := pickRunner(ms, tc.target, tc.stalled); got != tc.want {
			t.Errorf("pickRunner(target %s, stalled %s) = %s, want %s", tc.target, tc.stalled, got, tc.want)
		}
	}
	if got := pickRunner([]shared.MachineID{"m-a"}, "m-x", "m-a"); got != "m-a" {
		t.Errorf("the only manager, though it stalled once: got %q", got)
	}
	if got := pickRunner([]shared.MachineID{"m-a"}, "m-a", ""); got != "" {
		t.Errorf("a lone manager removing itself: got %q, want none", got)
	}
}

func TestPickReplacementSpreadsOverRacks(t *testing.T) {
	w := func(id, rack string) shared.MachineSummary {
		return shared.MachineSummary{ID: shared.MachineID(id), Labels: map[string]string{"rack": rack}}
	}
	workers := []shared.MachineSummary{w("m-a", "r1"), w("m-b", "r2"), w("m-c", "r3")}
	got, ok := pickReplacement(workers, map[string]int{"r1": 1, "r2": 1}, "rack")
	if !ok || got.ID != "m-c" {
		t.Fatalf("managers in r1 and r2: picked %s, want the worker in r3", got.ID)
	}
	got, _ = pickReplacement(workers, map[string]int{"r1": 2, "r2": 1, "r3": 1}, "rack")
	if got.ID != "m-b" {
		t.Fatalf("every rack has a manager: picked %s, want the first of the least-covered (m-b)", got.ID)
	}
	if _, ok := pickReplacement(nil, nil, "rack"); ok {
		t.Fatal("no workers, yet a replacement")
	}
}
