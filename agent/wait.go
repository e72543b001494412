package agent

import (
	"math/rand/v2"
	"time"
)

// backoff doubles from min to max; each wait is jittered so that a rack of machines
// that lost the coordinator at once does not come back in lockstep.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return jitter(b.cur, 0.5)
}

// jitter returns d moved by up to ±frac of itself.
func jitter(d time.Duration, frac float64) time.Duration {
	return time.Duration(float64(d) * (1 - frac + 2*frac*rand.Float64()))
}
