package api

import (
	"net/http"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// Progress reports are hints (the agent sends one a second while a step runs and drops
// it on any error), yet each one that is accepted is a Raft write. At fleet scale they
// are most of the writes: with 10,000 machines imaging at once they offer ~10,000
// writes/s to a log that commits ~3,000/s here, and every report, result and check-in
// queues behind them (measured with `rivet-bench fleet`). So each coordinator lets
// through at most one progress report per machine, step and attempt per interval, the
// interval growing with the fleet so that progress costs at most ~progressBudget
// writes/s in all. The rest are answered 429 and change nothing; results and the
// first report of every attempt are never throttled.
const (
	// The agent sends at most one a second; below 500 machines the gate never bites.
	progressMinEvery = time.Second
	progressBudget   = 500 // progress writes/s for the whole fleet
)

type progressKey struct {
	id      shared.MachineID
	step    string
	attempt int
}

// progressGate remembers when it last let a progress report through, per key.
type progressGate struct {
	mu    sync.Mutex
	last  map[progressKey]time.Time
	swept time.Time
}

// every is the interval for a fleet of n machines.
func progressEvery(n int) time.Duration {
	return max(progressMinEvery, time.Duration(n)*time.Second/progressBudget)
}

// allow reports whether a progress report for k may be written now.
func (g *progressGate) allow(k progressKey, now time.Time, every time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = map[progressKey]time.Time{}
	}
	if now.Sub(g.swept) > 4*every { // forget finished steps now and then
		for key, t := range g.last {
			if now.Sub(t) > every {
				delete(g.last, key)
			}
		}
		g.swept = now
	}
	if t, ok := g.last[k]; ok && now.Sub(t) < every {
		return false
	}
	g.last[k] = now
	return true
}

func throttled(every time.Duration) error {
	return &shared.APIError{Status: http.StatusTooManyRequests, Code: shared.CodeRateLimited,
		Message: "progress recorded less than " + every.String() + " ago for this step; not recorded",
		Hint:    "progress is a hint: the agent sends the next one anyway, and results are never throttled"}
}
