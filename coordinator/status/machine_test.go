package status

import (
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

// TestApproveIsOfferedOnlyToUnadmittedMachines: the page offers the operator's
// admission exactly where it means something.
func TestApproveIsOfferedOnlyToUnadmittedMachines(t *testing.T) {
	has := func(m *shared.Machine) bool {
		for _, b := range actionsFor(m) {
			if b.Action == shared.ActionApprove {
				return true
			}
		}
		return false
	}
	waiting := &shared.Machine{ID: "m-1", State: shared.StateDiscovered}
	admitted := &shared.Machine{ID: "m-2", State: shared.StateDiscovered, Admission: &shared.Admission{How: shared.AdmitExpected}}
	retired := &shared.Machine{ID: "m-3", State: shared.StateRetired}
	if !has(waiting) || has(admitted) || has(retired) {
		t.Fatalf("approve offered: unadmitted %v, admitted %v, retired %v; want true, false, false",
			has(waiting), has(admitted), has(retired))
	}
	for _, b := range actionsFor(waiting) {
		if b.Action.Validate() != nil {
			t.Fatalf("the %s button posts an action the page handler does not accept", b.Label)
		}
	}
}
