package step

import (
	"math/rand/v2"
	"time"
)

// RetryPolicy says how often a failing step is tried again and how long to wait between
// tries. Waits grow exponentially from Initial up to Max, each with up to Jitter (a
// fraction, 0..1) taken off at random so that 200 machines failing together (the image
// server restarted) do not come back in lockstep.
type RetryPolicy struct {
	MaxAttempts int           // tries per step and RunPhase call; default 3
	Initial     time.Duration // first wait; default 2s
	Max         time.Duration // longest wait; default 1m
	Jitter      float64       // default 0.3
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 3
	}
	if p.Initial <= 0 {
		p.Initial = 2 * time.Second
	}
	if p.Max <= 0 {
		p.Max = time.Minute
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	if p.Jitter <= 0 || p.Jitter > 1 {
		p.Jitter = 0.3
	}
	return p
}

// Backoff returns the wait before try number attempt+1, after attempt tries failed
// (attempt ≥ 1).
func (p RetryPolicy) Backoff(attempt int) time.Duration {
	p = p.withDefaults()
	d := p.Initial
	for i := 1; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	return d - time.Duration(rand.Float64()*p.Jitter*float64(d))
}
