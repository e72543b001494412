package state

import (
	"slices"

	"github.com/rivetmetal/rivet/shared"
)

// frozen returns a copy of the data that later mutations do not touch, cheap enough to
// take under the read lock: maps are copied, machines are cloned (clone copies what
// mutations change in place), and timelines keep their current length (event only
// appends past it or replaces the slice). The caller holds s.mu.
func (s *Store) frozen() *Data {
	d := &Data{
		Cluster:      s.data.Cluster,
		Coordinators: make(map[string]Coordinator, len(s.data.Coordinators)),
		Machines:     make(map[shared.MachineID]*shared.Machine, len(s.data.Machines)),
		Events:       make(map[shared.MachineID][]shared.Event, len(s.data.Events)),
		Roles:        make(map[string]*shared.Role, len(s.data.Roles)),
		Tokens:       make(map[string]*Token, len(s.data.Tokens)),
		Swarm:        s.data.Swarm,
		TokenGens:    make(map[shared.MachineID]uint64, len(s.data.TokenGens)),
	}
	// Roles and tokens are replaced whole by their mutations, never changed in place.
	for k, v := range s.data.Coordinators {
		d.Coordinators[k] = v
	}
	for k, m := range s.data.Machines {
		d.Machines[k] = clone(m)
	}
	for k, evs := range s.data.Events {
		d.Events[k] = evs[:len(evs):len(evs)]
	}
	for k, v := range s.data.Roles {
		d.Roles[k] = v
	}
	for k, v := range s.data.Tokens {
		d.Tokens[k] = v
	}
	for k, v := range s.data.TokenGens {
		d.TokenGens[k] = v
	}
	d.Swarm.ManagerAddrs = slices.Clone(s.data.Swarm.ManagerAddrs) // sorted in place on report
	return d
}
