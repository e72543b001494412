package state

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

// ApplySetLabels sets and removes operator labels on the machines and unmatched expected
// rows the command names or selects: all of them or, when one cannot take the change
// (unknown, too many labels), none. Each machine that changed gets the change on its
// timeline, with who asked. The agent's facts are never touched: selectors read them
// only under facts:, and only the agent reports them.
func (s *Store) ApplySetLabels(c SetLabels, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		if err := shared.ValidateLabelChange(c.Set, c.Remove); err != nil {
			return Result{}, reject(KindInvalid, RuleLabels, "", "%v", err)
		}
		machines, rows, err := s.labelTargets(c)
		if err != nil {
			return Result{}, err
		}
		mChanges := map[shared.MachineID]map[string]string{}
		rChanges := map[string]map[string]string{}
		for _, id := range machines {
			next := relabel(s.data.Machines[id].Labels, c)
			if len(next) > shared.MaxLabels {
				return Result{}, reject(KindInvalid, RuleLabels, string(id),
					"machine %s would have %d labels, at most %d", id, len(next), shared.MaxLabels)
			}
			if !maps.Equal(next, s.data.Machines[id].Labels) {
				mChanges[id] = next
			}
		}
		for _, key := range rows {
			next := relabel(s.data.Expected[key].Labels, c)
			if len(next) > shared.MaxLabels {
				return Result{}, reject(KindInvalid, RuleLabels, key,
					"expected machine %s would have %d labels, at most %d", key, len(next), shared.MaxLabels)
			}
			if !maps.Equal(next, s.data.Expected[key].Labels) {
				rChanges[key] = next
			}
		}
		msg := labelText(c)
		for _, id := range slices.Sorted(maps.Keys(mChanges)) {
			m := s.data.Machines[id]
			m.Labels = mChanges[id] // replaced whole: readers hold clones of the old map
			if m.State == shared.StateDiscovered && !strings.HasPrefix(m.Unmatched, shared.NotAdmittedPrefix) {
				m.Unmatched = "" // new labels: the planner looks at it afresh
			}
			m.UpdatedAt = c.Time
			s.event(index, c.Time, id, shared.EventLabels, msg)
			s.notifyAfter = append(s.notifyAfter, id)
		}
		for key, labels := range rChanges {
			row := *s.data.Expected[key] // replaced whole: a snapshot copy shares the old one's maps
			row.Labels = labels
			s.data.Expected[key] = &row
			s.expectedChanged = true
		}
		return Result{Value: fmt.Sprintf("%d machines and %d expected machines labelled (%d already were)",
			len(mChanges), len(rChanges), len(machines)+len(rows)-len(mChanges)-len(rChanges))}, nil
	})
}

// labelTargets resolves the command's refs and selector to machines and unmatched rows,
// each once, sorted. The caller holds s.mu.
func (s *Store) labelTargets(c SetLabels) ([]shared.MachineID, []string, error) {
	machines, rows := map[shared.MachineID]bool{}, map[string]bool{}
	for _, ref := range c.Refs {
		if _, ok := s.data.Machines[shared.MachineID(ref)]; ok {
			machines[shared.MachineID(ref)] = true
			continue
		}
		e, ok := s.data.Expected[ref]
		switch {
		case !ok:
			return nil, nil, reject(KindNotFound, RuleMachineUnknown, ref,
				"no machine or expected machine %s; nothing labelled", ref)
		case s.pending(e):
			rows[ref] = true
		default:
			machines[e.MachineID] = true
		}
	}
	if len(c.Selector) > 0 {
		for id, m := range s.data.Machines {
			if labelsMatch(m.Labels, c.Selector) {
				machines[id] = true
			}
		}
		for key, e := range s.data.Expected {
			if s.pending(e) && labelsMatch(e.Labels, c.Selector) {
				rows[key] = true
			}
		}
	}
	if len(machines) == 0 && len(rows) == 0 {
		return nil, nil, reject(KindNotFound, RuleNothingSelected, "",
			"no machine or expected machine matches %s; nothing labelled", selectorText(c.Selector))
	}
	return slices.Sorted(maps.Keys(machines)), slices.Sorted(maps.Keys(rows)), nil
}

// relabel is labels with the command's change applied, a new map.
func relabel(labels map[string]string, c SetLabels) map[string]string {
	next := maps.Clone(labels)
	if next == nil {
		next = map[string]string{}
	}
	for _, k := range c.Remove {
		delete(next, k)
	}
	maps.Copy(next, c.Set)
	return next
}

func labelText(c SetLabels) string {
	t := "labels"
	if len(c.Set) > 0 {
		t += " set " + shared.LabelsText(c.Set)
	}
	if len(c.Remove) > 0 {
		if len(c.Set) > 0 {
			t += ";"
		}
		t += " removed " + strings.Join(c.Remove, ",")
	}
	if c.By != "" {
		t += " by " + c.By
	}
	if len(c.Selector) > 0 {
		t += " (selector " + selectorText(c.Selector) + ")"
	}
	return t
}

func selectorText(sel map[string]string) string {
	if len(sel) == 0 {
		return "the names given"
	}
	return shared.LabelsText(sel)
}
