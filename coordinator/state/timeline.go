package state

import (
	"fmt"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

type timeT = time.Time

// mutate runs fn under the write lock, records the applied index, and tells the watcher
// which machine changed (outside the lock, so it may read the store).
func (s *Store) mutate(index uint64, id shared.MachineID, fn func() (Result, error)) (Result, error) {
	s.mu.Lock()
	res, err := fn()
	if index > s.applied {
		s.applied = index
	}
	watch := s.watch
	bulk := s.notifyAfter
	s.notifyAfter = nil
	rows := s.expectedChanged
	s.expectedChanged = false
	s.mu.Unlock()
	if rows {
		s.subs.notify("") // the listed expected rows changed: pages reload
	}
	for _, changed := range bulk {
		if watch != nil {
			watch(changed)
		}
		s.subs.notify(changed)
	}
	if id != "" && err == nil {
		if watch != nil {
			watch(id)
		}
		s.subs.notify(id)
	}
	if res.Touched != "" {
		s.subs.notify(res.Touched)
	}
	return res, err
}

// event appends to a machine's timeline, dropping the oldest beyond the cap.
func (s *Store) event(index uint64, now time.Time, id shared.MachineID, kind, msg string) {
	evs := append(s.data.Events[id], shared.Event{Index: index, Time: now, MachineID: id, Kind: kind, Message: msg})
	if len(evs) > MaxEventsPerMachine {
		evs = append([]shared.Event(nil), evs[len(evs)-MaxEventsPerMachine:]...)
	}
	s.data.Events[id] = evs
}

// setState moves a machine and records the transition on its timeline. Callers have
// checked that the transition is allowed where an outside party asked for it.
func (s *Store) setState(index uint64, now time.Time, m *shared.Machine, to shared.State, why string) {
	if m.State == to {
		return
	}
	s.event(index, now, m.ID, shared.EventState, fmt.Sprintf("%s → %s: %s", m.State, to, why))
	m.State = to
}
