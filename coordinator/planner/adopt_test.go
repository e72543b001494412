package planner

import (
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

func TestRoleWithoutInstallPlansOnlyTheSwarm(t *testing.T) {
	role := &shared.Role{Name: "swarm-host", Swarm: shared.SwarmSpec{Role: shared.SwarmAuto}}
	m := &shared.Machine{ID: "m-00000000000000ab", Inventory: &shared.Inventory{}}
	p, err := Plan(m, role, 1, shared.SwarmManager)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Steps) != 1 || p.Steps[0].Kind != shared.StepSwarm || p.Steps[0].Swarm.Role != shared.SwarmManager {
		t.Fatalf("plan %+v, want the swarm step alone", p.Steps)
	}
	half := &shared.Role{Name: "half", Image: shared.ImageSpec{URL: "/v1/images/x", SHA256: "x"},
		Swarm: shared.SwarmSpec{Role: shared.SwarmNone}}
	if err := half.Validate(); err == nil {
		t.Fatal("a role with an image but no install_disk must be refused")
	}
}
