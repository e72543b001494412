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
