package shared

import (
	"strings"
	"testing"
)

func TestCanTransition(t *testing.T) {
	tests := []struct {
		from, to, lostFrom State
		ok                 bool
	}{
		// the happy path, in order
		{StateDiscovered, StatePlanned, "", true},
		{StatePlanned, StateProvisioning, "", true},
		{StateProvisioning, StateInstalled, "", true},
		{StateInstalled, StateJoining, "", true},
		{StateJoining, StateReady, "", true},
		// operator actions and failures
		{StateProvisioning, StateFailed, "", true},
		{StateFailed, StatePlanned, "", true}, // retry
		{StateReady, StateRetired, "", true},
		{StateRetired, StateDiscovered, "", true}, // release
		{StateInstalled, StateDiscovered, "", true},
		// skipping ahead or back is refused
		{StateDiscovered, StateReady, "", false},
		{StateDiscovered, StateInstalled, "", false},
		{StateReady, StateProvisioning, "", false},
		{StateRetired, StateReady, "", false},
		{StateReady, StateReady, "", false},
		// lost returns only to where it was lost from, or is retired
		{StateReady, StateLost, "", true},
		{StateLost, StateReady, StateReady, true},
		{StateLost, StateProvisioning, StateProvisioning, true},
		{StateLost, StateRetired, StateReady, true},
		{StateLost, StateRetired, "", true},
		{StateLost, StateProvisioning, StateReady, false}, // never a reason to re-provision
		{StateLost, StateDiscovered, StateReady, false},
		{StateLost, StateReady, "", false},
		{StateLost, StateLost, StateLost, false},
		// lostFrom means nothing unless the machine is lost
		{StateDiscovered, StateReady, StateReady, false},
		// unknown states
		{StateDiscovered, "installing", "", false},
		{"bogus", StatePlanned, "", false},
		{StateLost, "", "", false},
	}
	for _, tt := range tests {
		err := CanTransition(tt.from, tt.to, tt.lostFrom)
		if (err == nil) != tt.ok {
			t.Errorf("CanTransition(%q → %q, lost from %q) = %v, want ok=%v", tt.from, tt.to, tt.lostFrom, err, tt.ok)
		}
	}
}

func TestEveryStateHasTransitions(t *testing.T) {
	for _, s := range States {
		if !s.Valid() {
			t.Errorf("state %s is listed but not valid", s)
		}
		if s == StateExpected {
			// An expected row is no machine record: nothing moves into or out of it.
			for _, from := range States {
				if CanTransition(from, StateExpected, StateExpected) == nil || CanTransition(StateExpected, from, "") == nil {
					t.Errorf("a transition between %s and expected is allowed", from)
				}
			}
			continue
		}
		if len(transitions[s]) == 0 {
			t.Errorf("state %s is a dead end", s)
		}
		for _, to := range transitions[s] {
			if !to.Valid() {
				t.Errorf("%s → %s: target is not a state", s, to)
			}
		}
		if s != StateRetired && CanTransition(s, StateRetired, "") != nil && s != StateLost {
			t.Errorf("a %s machine cannot be retired", s)
		}
	}
	if err := State("nope").Validate(); err == nil || !strings.Contains(err.Error(), "discovered") {
		t.Errorf("unknown state error = %v, want it to list the states", err)
	}
}

func TestStatePredicates(t *testing.T) {
	for _, s := range States {
		if s.Active() != (s != StateRetired) {
			t.Errorf("%s.Active() = %v", s, s.Active())
		}
		settled := s == StateReady || s == StateFailed || s == StateRetired
		if s.Settled() != settled {
			t.Errorf("%s.Settled() = %v, want %v", s, s.Settled(), settled)
		}
	}
}
