package fleetsim

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// Stats collects what the simulated fleet saw of the API: every call's latency by route,
// failures by route and status, and the moments the fleet passed its milestones. It is
// safe for concurrent use; one Stats serves the whole fleet.
type Stats struct {
	mu       sync.Mutex
	start    time.Time
	latency  map[string][]time.Duration // route → latency of every successful call
	failures map[string]int             // "route status" → count
	acked    int                        // writes the API acknowledged
	firstErr map[string]string          // "route status" → first error text, for the report
	// Milestones: how many machines reached each, and when the last one did.
	counts map[string]int
	last   map[string]time.Time
	// swarmWaits counts swarm-join answers "the swarm does not exist yet".
	swarmWaits int
}

// Milestones counted per machine.
const (
	MilestoneRegistered = "registered"
	MilestoneImaging    = "imaging" // the image step's first report was acknowledged
	MilestoneRebooted   = "rebooted"
	MilestoneReady      = "ready"
	MilestoneGossip     = "gossip" // joined the Serf pool (first time)
)

// NewStats returns empty stats whose clock starts now.
func NewStats() *Stats {
	return &Stats{start: time.Now(), latency: map[string][]time.Duration{}, failures: map[string]int{},
		firstErr: map[string]string{}, counts: map[string]int{}, last: map[string]time.Time{}}
}

// Start is when the stats began.
func (s *Stats) Start() time.Time { return s.start }

// record notes one API call. write says whether a success counts as an acknowledged write.
func (s *Stats) record(route string, took time.Duration, err error, write bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.latency[route] = append(s.latency[route], took)
		if write {
			s.acked++
		}
		return
	}
	key := fmt.Sprintf("%s %d", route, shared.StatusOf(err))
	s.failures[key]++
	if _, ok := s.firstErr[key]; !ok {
		s.firstErr[key] = err.Error()
	}
}

func (s *Stats) milestone(name string) {
	s.mu.Lock()
	s.counts[name]++
	s.last[name] = time.Now()
	s.mu.Unlock()
}

func (s *Stats) swarmWait() {
	s.mu.Lock()
	s.swarmWaits++
	s.mu.Unlock()
}

// Count is how many machines reached a milestone.
func (s *Stats) Count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[name]
}

// Last is when the last machine reached a milestone (zero if none did).
func (s *Stats) Last(name string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[name]
}

// Acked is how many writes the API acknowledged so far.
func (s *Stats) Acked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked
}

// Summary is a snapshot of the stats.
type Summary struct {
	Calls      int
	P50, P99   time.Duration
	Routes     map[string]RouteSummary
	Failures   map[string]int    // "route status" → count (status 0: no answer)
	FirstError map[string]string // "route status" → the first error seen
	Acked      int
	SwarmWaits int
}

// RouteSummary is one route's latency.
type RouteSummary struct {
	Calls    int
	P50, P99 time.Duration
}

// Summary computes percentiles over every call so far.
func (s *Stats) Summary() Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Summary{Routes: map[string]RouteSummary{}, Failures: map[string]int{}, FirstError: map[string]string{},
		Acked: s.acked, SwarmWaits: s.swarmWaits}
	var all []time.Duration
	for route, lat := range s.latency {
		sorted := slices.Clone(lat)
		slices.Sort(sorted)
		out.Routes[route] = RouteSummary{Calls: len(sorted), P50: percentile(sorted, 50), P99: percentile(sorted, 99)}
		all = append(all, sorted...)
	}
	slices.Sort(all)
	out.Calls, out.P50, out.P99 = len(all), percentile(all, 50), percentile(all, 99)
	for k, v := range s.failures {
		out.Failures[k] = v
		out.FirstError[k] = s.firstErr[k]
	}
	return out
}

// FailureKeys returns the failure keys sorted, for stable output.
func (sm Summary) FailureKeys() []string {
	keys := make([]string, 0, len(sm.Failures))
	for k := range sm.Failures {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}
