package planner

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

// rackFleet builds auto candidates: perRack[i] machines in rack "r<i+1>", ids m-<rack>-<nn>.
func rackFleet(perRack ...int) []Candidate {
	var fleet []Candidate
	for r, n := range perRack {
		for i := range n {
			rack := fmt.Sprintf("r%d", r+1)
			fleet = append(fleet, Candidate{ID: shared.MachineID(fmt.Sprintf("m-%s-%02d", rack, i)),
				Labels: map[string]string{"rack": rack}, Swarm: shared.SwarmAuto})
		}
	}
	return fleet
}

// managersPerRack counts managers by their rack label, e.g. "r1:2 r2:1".
func managersPerRack(fleet []Candidate, roles map[shared.MachineID]string, label string) string {
	count := map[string]int{}
	for _, c := range fleet {
		if roles[c.ID] == shared.SwarmManager {
			count[c.Labels[label]]++
		}
	}
	var parts []string
	for rack, n := range count {
		parts = append(parts, fmt.Sprintf("%s:%d", rack, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func TestPlaceSpreadsOverRacks(t *testing.T) {
	tests := []struct {
		name     string
		fleet    []Candidate
		opts     PlacementOptions
		want     string // managers per rack
		managers []shared.MachineID
		note     string // substring of some note, "" for no notes
	}{
		{name: "3 racks: one per rack", fleet: rackFleet(4, 4, 4), want: "r1:1 r2:1 r3:1",
			managers: []shared.MachineID{"m-r1-00", "m-r2-00", "m-r3-00"}},
		{name: "2 racks: 2+1", fleet: rackFleet(4, 4), want: "r1:2 r2:1",
			managers: []shared.MachineID{"m-r1-00", "m-r1-01", "m-r2-00"}},
		{name: "1 rack: all three there", fleet: rackFleet(6), want: "r1:3",
			note: "all 3 managers are in one failure domain (rack r1)"},
		{name: "small rack is used up, then the big one", fleet: rackFleet(1, 5), want: "r1:1 r2:2"},
		{name: "5 managers over 3 racks: 2+2+1", fleet: rackFleet(20, 20, 20), want: "r1:2 r2:2 r3:1"},
		{name: "5 managers over 5 racks", fleet: rackFleet(11, 11, 11, 11, 11), want: "r1:1 r2:1 r3:1 r4:1 r5:1"},
		{name: "other label key", fleet: rackFleet(3, 3, 3), opts: PlacementOptions{DomainLabel: "room"},
			want: ":3", note: "machines without a room label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Place(tt.fleet, tt.opts)
			label := tt.opts.withDefaults().DomainLabel
			if got := managersPerRack(tt.fleet, p.Roles, "rack"); label == "rack" && got != tt.want {
				t.Errorf("managers per rack = %q; want %q", got, tt.want)
			}
			if got := managersPerRack(tt.fleet, p.Roles, label); label != "rack" && got != tt.want {
				t.Errorf("managers per %s = %q; want %q", label, got, tt.want)
			}
			for _, id := range tt.managers {
				if p.Roles[id] != shared.SwarmManager {
					t.Errorf("%s is %q; want manager (smallest id in its rack)", id, p.Roles[id])
				}
			}
			if len(p.Roles) != len(tt.fleet) {
				t.Errorf("placed %d machines; want all %d", len(p.Roles), len(tt.fleet))
			}
			if p.Managers != p.Want {
				t.Errorf("placed %d managers; want %d", p.Managers, p.Want)
			}
			if tt.note == "" && len(p.Notes) > 0 {
				t.Errorf("unexpected notes: %q", p.Notes)
			}
			if tt.note != "" && !strings.Contains(strings.Join(p.Notes, "\n"), tt.note) {
				t.Errorf("notes %q lack %q", p.Notes, tt.note)
			}
		})
	}
}

func TestPlaceThreeOrFive(t *testing.T) {
	tests := []struct {
		name  string
		fleet []Candidate
		opts  PlacementOptions
		want  int
	}{
		{name: "50 machines: 3", fleet: rackFleet(25, 25), want: 3},
		{name: "51 machines: 5", fleet: rackFleet(25, 26), want: 5},
		{name: "custom threshold, at it: 3", fleet: rackFleet(5, 5), opts: PlacementOptions{FiveAbove: 10}, want: 3},
		{name: "custom threshold, above: 5", fleet: rackFleet(5, 6), opts: PlacementOptions{FiveAbove: 10}, want: 5},
		{name: "fixed workers count towards the size",
			fleet: append(rackFleet(25, 25), Candidate{ID: "m-fixed", Swarm: shared.SwarmWorker}), want: 5},
		{name: "swarm none does not count",
			fleet: append(rackFleet(25, 25), Candidate{ID: "m-storage", Swarm: shared.SwarmNone}), want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Place(tt.fleet, tt.opts)
			if p.Want != tt.want || p.Managers != tt.want {
				t.Fatalf("want/placed = %d/%d managers; want %d", p.Want, p.Managers, tt.want)
			}
		})
	}
}

func TestPlaceFixedRoles(t *testing.T) {
	fleet := append(rackFleet(3, 3),
		Candidate{ID: "m-a-fixed", Labels: map[string]string{"rack": "r1"}, Swarm: shared.SwarmManager},
		Candidate{ID: "m-b-fixed", Labels: map[string]string{"rack": "r1"}, Swarm: shared.SwarmManager},
		Candidate{ID: "m-w-fixed", Labels: map[string]string{"rack": "r2"}, Swarm: shared.SwarmWorker,
			Placed: shared.SwarmManager}, // the operator made its role a worker role: that wins
		Candidate{ID: "m-none", Swarm: shared.SwarmNone},
	)
	p := Place(fleet, PlacementOptions{})
	// Two fixed managers in r1: the one auto manager goes to r2.
	if got := managersPerRack(fleet, p.Roles, "rack"); got != "r1:2 r2:1" {
		t.Fatalf("managers per rack = %q; want r1:2 r2:1", got)
	}
	if p.Roles["m-a-fixed"] != shared.SwarmManager || p.Roles["m-b-fixed"] != shared.SwarmManager ||
		p.Roles["m-w-fixed"] != shared.SwarmWorker || p.Roles["m-r2-00"] != shared.SwarmManager {
		t.Fatalf("roles = %v", p.Roles)
	}
	if _, ok := p.Roles["m-none"]; ok {
		t.Fatal("a swarm none machine was placed")
	}

	four := []Candidate{{ID: "a", Swarm: shared.SwarmManager}, {ID: "b", Swarm: shared.SwarmManager},
		{ID: "c", Swarm: shared.SwarmManager}, {ID: "d", Swarm: shared.SwarmManager}}
	p = Place(four, PlacementOptions{})
	if p.Managers != 4 || !strings.Contains(strings.Join(p.Notes, "\n"), "more than the 3 wanted") ||
		!strings.Contains(strings.Join(p.Notes, "\n"), "even number of managers (4)") {
		t.Fatalf("4 fixed managers: placed %d, notes %q", p.Managers, p.Notes)
	}
}

// grow feeds a placement back as the fleet's Placed roles, as the coordinator does once
// plans exist, and adds more machines.
func grow(fleet []Candidate, roles map[shared.MachineID]string, more []Candidate) []Candidate {
	out := make([]Candidate, 0, len(fleet)+len(more))
	for _, c := range fleet {
		c.Placed = roles[c.ID]
		out = append(out, c)
	}
	return append(out, more...)
}

func TestPlaceIsStableAsTheFleetGrows(t *testing.T) {
	// Two machines: both managers, and the placement says it wants a third.
	fleet := rackFleet(2)
	p := Place(fleet, PlacementOptions{})
	if p.Managers != 2 || !strings.Contains(strings.Join(p.Notes, "\n"), "only 2 of 3 wanted managers") {
		t.Fatalf("2 machines: %d managers, notes %q", p.Managers, p.Notes)
	}

	// Racks r2 and r3 arrive: one more manager, and it goes to a new rack.
	more := rackFleet(0, 3, 3)
	fleet = grow(fleet, p.Roles, more)
	p2 := Place(fleet, PlacementOptions{})
	assertKept(t, p.Roles, p2.Roles)
	if got := managersPerRack(fleet, p2.Roles, "rack"); got != "r1:2 r2:1" {
		t.Fatalf("after growing to 8: managers per rack = %q; want r1:2 r2:1", got)
	}

	// Grow past 50 with a fourth rack: 2 more managers, from the new machines only, never
	// by demoting, promoting or moving anyone. r3's machines are placed workers and stay
	// workers, so both new managers are in r4.
	fleet = grow(fleet, p2.Roles, rackFleet(0, 0, 0, 45))
	p3 := Place(fleet, PlacementOptions{})
	assertKept(t, p2.Roles, p3.Roles)
	if p3.Want != 5 || p3.Managers != 5 {
		t.Fatalf("53 machines: want/placed %d/%d; want 5/5", p3.Want, p3.Managers)
	}
	if got := managersPerRack(fleet, p3.Roles, "rack"); got != "r1:2 r2:1 r4:2" {
		t.Fatalf("after growing to 53: managers per rack = %q; want r1:2 r2:1 r4:2", got)
	}

	// Placing the same fleet again changes nothing.
	p4 := Place(grow(fleet, p3.Roles, nil), PlacementOptions{})
	if !reflect.DeepEqual(p3.Roles, p4.Roles) {
		t.Fatal("placing a placed fleet again changed it")
	}
}

// assertKept checks every machine placed before keeps its role.
func assertKept(t *testing.T, before, after map[shared.MachineID]string) {
	t.Helper()
	for id, r := range before {
		if after[id] != r {
			t.Errorf("%s changed from %s to %s", id, r, after[id])
		}
	}
}

func TestPlaceIsDeterministic(t *testing.T) {
	fleet := append(rackFleet(7, 3, 5, 1), Candidate{ID: "m-nolabel", Swarm: shared.SwarmAuto},
		Candidate{ID: "m-0", Labels: map[string]string{"rack": "r9"}, Swarm: shared.SwarmAuto})
	want := Place(fleet, PlacementOptions{FiveAbove: 5})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		shuffled := append([]Candidate(nil), fleet...)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		got := Place(shuffled, PlacementOptions{FiveAbove: 5})
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("shuffle %d: placement differs:\n got %v\nwant %v", i, got, want)
		}
	}
	// 6 domains, 5 managers: the five domains whose smallest ids sort first.
	if got := managersPerRack(fleet, want.Roles, "rack"); got != ":1 r1:1 r2:1 r3:1 r9:1" {
		t.Fatalf("managers per rack = %q", got)
	}
}
