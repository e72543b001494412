package state

import (
	"sync"
	"sync/atomic"

	"github.com/rivetmetal/rivet/shared"
)

// Watching: readers that show the fleet live (status pages, `rivet machines watch`)
// subscribe to machine changes. Each subscription keeps the set of machines changed since
// its owner last looked, plus a one-slot wake-up channel, so the apply path never blocks on
// a slow reader and a burst of changes to one machine costs one entry, not one message.

// Subscription is one reader's view of which machines changed.
type Subscription struct {
	w       *watchers
	ready   chan struct{}
	mu      sync.Mutex
	pending map[shared.MachineID]struct{}
	all     bool // a snapshot was restored: anything may have changed
}

// watchers is the store's set of subscriptions; its zero value is ready to use.
type watchers struct {
	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	version atomic.Uint64
}

// Subscribe starts recording machine changes for the caller. Close it when done.
func (s *Store) Subscribe() *Subscription {
	sub := &Subscription{w: &s.subs, ready: make(chan struct{}, 1), pending: map[shared.MachineID]struct{}{}}
	s.subs.mu.Lock()
	if s.subs.subs == nil {
		s.subs.subs = map[*Subscription]struct{}{}
	}
	s.subs.subs[sub] = struct{}{}
	s.subs.mu.Unlock()
	return sub
}

// ChangeVersion grows by one with every machine change (and every restore): a cheap way
// to tell whether anything changed since the last look.
func (s *Store) ChangeVersion() uint64 { return s.subs.version.Load() }

// Ready is signalled when changes are pending; call Take after it fires.
func (sub *Subscription) Ready() <-chan struct{} { return sub.ready }

// Take returns the machines changed since the last Take, and whether everything may have
// changed (a restored snapshot), and clears both.
func (sub *Subscription) Take() (ids []shared.MachineID, all bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	ids = make([]shared.MachineID, 0, len(sub.pending))
	for id := range sub.pending {
		ids = append(ids, id)
	}
	clear(sub.pending)
	all, sub.all = sub.all, false
	return ids, all
}

// Close stops the subscription.
func (sub *Subscription) Close() {
	sub.w.mu.Lock()
	delete(sub.w.subs, sub)
	sub.w.mu.Unlock()
}

func (sub *Subscription) add(id shared.MachineID) {
	sub.mu.Lock()
	if id == "" {
		sub.all = true
	} else {
		sub.pending[id] = struct{}{}
	}
	sub.mu.Unlock()
	select {
	case sub.ready <- struct{}{}:
	default: // already signalled
	}
}

// notify records that machine id changed; "" means everything may have. Called outside
// the store's lock.
func (w *watchers) notify(id shared.MachineID) {
	w.version.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	for sub := range w.subs {
		sub.add(id)
	}
}
