package state

import (
	"maps"
	"sort"

	"github.com/rivetmetal/rivet/shared"
)

// The power path's view of the fleet: every machine and every expected row that could be
// powered, each with its BMC opened (the password in clear, from the store's opened copy;
// the replicated data holds it sealed). Only the power path reads it; every other reader
// sees shared.BMC.Redacted.

// PowerTarget is one machine, or one expected row no machine has matched yet, as the
// power path needs it.
type PowerTarget struct {
	MachineID shared.MachineID // empty for an expected row no machine has matched
	Key       string           // its expected row's key; empty for a machine without a row
	Hostname  string
	Labels    map[string]string // operator labels: the machine's, else the row's
	BMC       shared.BMC        // opened: Password is in clear; zero without a BMC
	State     shared.State      // the machine's, or shared.StateExpected
}

// HasBMC reports whether the target has a BMC to power it by.
func (t PowerTarget) HasBMC() bool { return t.BMC.Driver != "" }

// String names the target without its password.
func (t PowerTarget) String() string {
	name := string(t.MachineID)
	if name == "" {
		name = "expected machine " + t.Key
	} else if t.Key != "" && t.Key != name {
		name += " (" + t.Key + ")"
	}
	return name
}

// PowerTarget finds one target by ref: a machine ID, else an expected row's key (its
// host name, first MAC or serial:S); a row that a machine matched gives that machine.
// The error is a *Rejected: not found, or (RuleNoBMC) a target without a BMC.
func (s *Store) PowerTarget(ref string) (PowerTarget, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var t PowerTarget
	if m, ok := s.data.Machines[shared.MachineID(ref)]; ok {
		key, _ := s.rowOf(m.ID)
		t = s.targetOf(m, key)
	} else if e, ok := s.data.Expected[ref]; ok {
		if m, bound := s.data.Machines[e.MachineID]; bound {
			t = s.targetOf(m, ref)
		} else {
			t = s.rowTarget(ref, e)
		}
	} else {
		return PowerTarget{}, reject(KindNotFound, RuleMachineUnknown, ref,
			"no machine or expected machine %s (give a machine id or the host name of an imported row)", ref)
	}
	if !t.HasBMC() {
		return t, reject(KindConflict, RuleNoBMC, ref,
			"%s has no BMC: import its row with bmc_driver, bmc_address, bmc_user and a password reference", t)
	}
	return t, nil
}

// PowerTargets returns every machine and every unmatched expected row whose operator
// labels include all of selector (nil or empty: all of them), sorted by machine id and
// then by row key. Targets without a BMC are included (HasBMC false), so the caller can
// say which it could not power.
func (s *Store) PowerTargets(selector map[string]string) []PowerTarget {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rowOf := make(map[shared.MachineID]string, len(s.data.Expected))
	for key, e := range s.data.Expected {
		if e.MachineID != "" {
			rowOf[e.MachineID] = key
		}
	}
	var out []PowerTarget
	for id, m := range s.data.Machines {
		if labelsMatch(m.Labels, selector) {
			out = append(out, s.targetOf(m, rowOf[id]))
		}
	}
	for key, e := range s.data.Expected {
		if s.pending(e) && labelsMatch(e.Labels, selector) {
			out = append(out, s.rowTarget(key, e))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (a.MachineID == "") != (b.MachineID == "") {
			return a.MachineID != ""
		}
		if a.MachineID != b.MachineID {
			return a.MachineID < b.MachineID
		}
		return a.Key < b.Key
	})
	return out
}

// labelsMatch: labels hold every pair of selector.
func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// pending: no machine holds the row (yet). The caller holds s.mu.
func (s *Store) pending(e *shared.ExpectedMachine) bool {
	if e.MachineID == "" {
		return true
	}
	_, ok := s.data.Machines[e.MachineID]
	return !ok
}

// rowOf finds the expected row a machine matched. The caller holds s.mu.
func (s *Store) rowOf(id shared.MachineID) (string, *shared.ExpectedMachine) {
	for key, e := range s.data.Expected {
		if e.MachineID == id {
			return key, e
		}
	}
	return "", nil
}

// targetOf is machine m with its row's BMC. The caller holds s.mu.
func (s *Store) targetOf(m *shared.Machine, key string) PowerTarget {
	t := PowerTarget{MachineID: m.ID, Key: key, Hostname: m.Hostname, Labels: maps.Clone(m.Labels), State: m.State}
	if e := s.data.Expected[key]; e != nil {
		if e.Hostname != "" {
			t.Hostname = e.Hostname
		}
		t.BMC = s.openedBMC(key, e)
	}
	return t
}

// rowTarget is an unmatched row. The caller holds s.mu.
func (s *Store) rowTarget(key string, e *shared.ExpectedMachine) PowerTarget {
	return PowerTarget{Key: key, Hostname: e.Hostname, Labels: maps.Clone(e.Labels),
		BMC: s.openedBMC(key, e), State: shared.StateExpected}
}

func (s *Store) openedBMC(key string, e *shared.ExpectedMachine) shared.BMC {
	if e.BMC == nil {
		return shared.BMC{}
	}
	b := *e.BMC
	b.Password = s.open.bmcPasswords[key]
	b.HasPassword = b.Password != ""
	return b
}

// ExpectedPending lists the expected rows no machine has matched yet, as the machine
// lists show them: state expected, the row's key, host name, labels and static address.
func (s *Store) ExpectedPending() []shared.MachineSummary {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []shared.MachineSummary
	for key, e := range s.data.Expected {
		if s.pending(e) {
			out = append(out, shared.MachineSummary{Key: key, State: shared.StateExpected, Hostname: e.Hostname,
				Labels: maps.Clone(e.Labels), Addr: e.Address})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
