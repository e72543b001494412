package shared

import "fmt"

// State is where a machine is in its life. Transitions are validated on the leader with
// CanTransition; the table below is the single source of truth for them.
type State string

const (
	// StateExpected is a row of the operator's import that no machine has matched yet:
	// it is listed and counted, but it is no machine record (ids derive from the
	// inventory, which only registration brings) and no transition leads in or out.
	StateExpected     State = "expected"
	StateDiscovered   State = "discovered"   // registered, no plan yet
	StatePlanned      State = "planned"      // matched to a role, plan assigned
	StateProvisioning State = "provisioning" // running its RAM-phase steps
	StateInstalled    State = "installed"    // first boot from disk has checked in
	StateJoining      State = "joining"      // running its disk-phase steps (swarm)
	StateReady        State = "ready"        // done
	StateFailed       State = "failed"       // a step failed; see the machine's LastError
	StateLost         State = "lost"         // gossip says gone: a hint, never a reason to wipe
	StateRetired      State = "retired"      // out of service: boot services stay silent
)

// States lists every state in lifecycle order, for tables and counters.
var States = []State{
	StateExpected, StateDiscovered, StatePlanned, StateProvisioning, StateInstalled, StateJoining,
	StateReady, StateFailed, StateLost, StateRetired,
}

// transitions maps a state to the states it may move to. Lost is special: a lost machine
// returns to the state it was lost from (see CanTransition), or is retired.
var transitions = map[State][]State{
	StateExpected:     {},
	StateDiscovered:   {StatePlanned, StateFailed, StateLost, StateRetired},
	StatePlanned:      {StateProvisioning, StateDiscovered, StateFailed, StateLost, StateRetired, StateInstalled},
	StateProvisioning: {StateInstalled, StateDiscovered, StateFailed, StateLost, StateRetired, StatePlanned},
	StateInstalled:    {StateJoining, StateDiscovered, StateFailed, StateLost, StateRetired},
	StateJoining:      {StateReady, StateFailed, StateLost, StateRetired, StateInstalled},
	StateReady:        {StateJoining, StateFailed, StateLost, StateRetired},
	StateFailed:       {StatePlanned, StateDiscovered, StateInstalled, StateLost, StateRetired},
	StateLost:         {StateRetired},
	StateRetired:      {StateDiscovered},
}

// Valid reports whether s is one of the lifecycle states.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// Validate returns an error for an unknown state.
func (s State) Validate() error {
	if !s.Valid() {
		return fmt.Errorf("unknown state %q (want one of %v)", s, States)
	}
	return nil
}

// CanTransition reports whether a machine in state from may move to state to. lostFrom is
// the state a lost machine was in before it was lost; a lost machine may return only there.
func CanTransition(from, to, lostFrom State) error {
	if err := to.Validate(); err != nil {
		return err
	}
	if to == StateExpected {
		return fmt.Errorf("no machine moves to %s: it is the state of an imported row before its machine registers", to)
	}
	if from == StateLost && to == lostFrom && to != StateLost {
		return nil
	}
	for _, allowed := range transitions[from] {
		if allowed == to {
			return nil
		}
	}
	return fmt.Errorf("transition %s → %s is not allowed", from, to)
}

// Active reports whether the machine is expected to gossip: everything but retired.
func (s State) Active() bool { return s != StateRetired }

// Settled reports whether a machine in this state waits on nothing but an operator:
// ready, failed, retired, or discovered without a matching role.
func (s State) Settled() bool {
	return s == StateReady || s == StateFailed || s == StateRetired
}
