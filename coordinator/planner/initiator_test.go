package planner

import (
	"math/rand/v2"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

// TestPlaceDesignatesOneInitiator: the planner, not the first machine to ask, decides
// which manager creates the swarm: exactly one, the same whatever the order of the
// fleet, never a worker, and never a second one while the first is planned or once a
// swarm exists.
func TestPlaceDesignatesOneInitiator(t *testing.T) {
	fleet := rackFleet(3, 3, 3)
	first := Place(fleet, PlacementOptions{})
	if first.Initiator != "m-r1-00" || !first.NewInitiator {
		t.Fatalf("initiator %q (new %v), want the smallest-id manager m-r1-00", first.Initiator, first.NewInitiator)
	}
	if first.Roles[first.Initiator] != shared.SwarmManager {
		t.Fatalf("initiator %s is a %s", first.Initiator, first.Roles[first.Initiator])
	}
	rng := rand.New(rand.NewPCG(7, 9))
	for range 20 {
		shuffled := append([]Candidate(nil), fleet...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := Place(shuffled, PlacementOptions{}).Initiator; got != first.Initiator {
			t.Fatalf("initiator depends on the fleet's order: %s, then %s", first.Initiator, got)
		}
	}

	tests := []struct {
		name    string
		edit    func(fleet []Candidate)
		want    shared.MachineID
		wantNew bool
	}{
		{name: "a planned initiator keeps it, a smaller new manager does not take it", edit: func(f []Candidate) {
			f[4].Placed, f[4].Init = shared.SwarmManager, true // m-r2-01
		}, want: "m-r2-01"},
		{name: "a swarm exists: nobody is designated", edit: func(f []Candidate) {
			f[4].Placed, f[4].Joined = shared.SwarmManager, true
		}},
		{name: "only workers are new and nobody has joined: nobody", edit: func(f []Candidate) {
			for i := range f {
				f[i].Swarm = shared.SwarmWorker
			}
		}},
		{name: "the planned creator was released: the next new manager is designated", edit: func(f []Candidate) {
			f[0].Placed = shared.SwarmManager // planned earlier without init: m-r1-00 cannot get it now
		}, want: "m-r2-00", wantNew: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := rackFleet(3, 3, 3)
			tt.edit(f)
			p := Place(f, PlacementOptions{})
			if p.Initiator != tt.want || p.NewInitiator != tt.wantNew {
				t.Fatalf("initiator %q (new %v), want %q (new %v)", p.Initiator, p.NewInitiator, tt.want, tt.wantNew)
			}
		})
	}
}

// TestDryRunAndPlanMarkTheInitiator: the designation reaches the plan's swarm step, of
// one machine only.
func TestDryRunAndPlanMarkTheInitiator(t *testing.T) {
	role := shared.Role{Name: "swarm", Swarm: shared.SwarmSpec{Role: shared.SwarmAuto}}
	var machines []*shared.Machine
	for _, id := range []shared.MachineID{"m-0000000000000003", "m-0000000000000001", "m-0000000000000002", "m-0000000000000004"} {
		machines = append(machines, &shared.Machine{ID: id, State: shared.StateDiscovered,
			Inventory: &shared.Inventory{}, Labels: map[string]string{}, Admission: &shared.Admission{How: shared.AdmitAuto}})
	}
	inits := 0
	for _, match := range DryRun([]shared.Role{role}, machines, PlacementOptions{}) {
		var m *shared.Machine
		for _, c := range machines {
			if c.ID == match.MachineID {
				m = c
			}
		}
		p, err := PlanMatch(m, &role, 5, match)
		if err != nil {
			t.Fatal(err)
		}
		sw := p.Steps[len(p.Steps)-1].Swarm
		if sw.Init {
			inits++
			if m.ID != "m-0000000000000001" || sw.Role != shared.SwarmManager {
				t.Errorf("%s (a %s) is designated to create the swarm, want m-0000000000000001", m.ID, sw.Role)
			}
		}
	}
	if inits != 1 {
		t.Fatalf("%d plans create the swarm, want exactly 1", inits)
	}
	worker := machines[3]
	if _, err := PlanMatch(worker, &role, 5, shared.RoleMatch{Role: "swarm", Swarm: shared.SwarmWorker, SwarmInit: true}); err == nil {
		t.Fatal("a worker's plan was made to create the swarm")
	}
}
