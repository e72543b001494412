package auth

import (
	"errors"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Throttle slows down guessing. Every failed credential (a bad bearer token, a refused
// login, a forged session cookie) takes one unit from a small bucket of its source
// address, and from the bucket of the operator token it named when that token exists.
// A request whose bucket is empty is answered 429 before its credential is checked, so
// while throttled a right guess looks like a wrong one. Buckets refill steadily and
// successes never drain them: an operator who mistypes a few times is not locked out,
// and agents with good tokens behind one address are never slowed.
//
// Buckets live in memory, one set per coordinator: an attacker who spreads guesses over
// three coordinators gets three buckets, still a handful of guesses a minute against
// secrets of 192 bits.
type Throttle struct {
	cfg       ThrottleConfig
	mu        sync.Mutex
	buckets   map[string]*bucket
	failures  *prometheus.CounterVec
	throttled *prometheus.CounterVec
}

// ThrottleConfig sizes the buckets.
type ThrottleConfig struct {
	Burst   int           // failures a key may make at once (default 10)
	Refill  time.Duration // one more failure is allowed after each (default 6 s: 10 a minute)
	MaxKeys int           // buckets kept at most (default 16384); beyond, new keys share one
	Now     func() time.Time
}

// Surface is where a credential was presented: a bounded label.
type Surface string

const (
	SurfaceAPI   Surface = "api"   // a bearer token on an API call
	SurfaceLogin Surface = "login" // the status pages' login form
	SurfacePages Surface = "pages" // a session cookie or bearer token on a status page
)

// Reason is why a credential was refused: a bounded label, never the credential itself.
type Reason string

const (
	ReasonMalformed      Reason = "malformed"       // not shaped like any Rivet token
	ReasonUnknown        Reason = "unknown"         // unknown, revoked, or the wrong secret
	ReasonRole           Reason = "role"            // genuine, but not a token that may log in
	ReasonForeignOrigin  Reason = "foreign_origin"  // a login form posted from another site
	ReasonForgedSession  Reason = "forged_session"  // a session cookie with a bad signature
	ReasonExpiredSession Reason = "expired_session" // a genuine session past its 8 hours
	ReasonEndedSession   Reason = "ended_session"   // a genuine session that was logged out
)

// ReasonOf classifies an error of Resolve.
func ReasonOf(err error) Reason {
	if errors.Is(err, ErrMalformed) {
		return ReasonMalformed
	}
	return ReasonUnknown
}

type bucket struct {
	level float64 // failures still allowed, as of at
	at    time.Time
}

// overflowKey is the bucket that new keys share once MaxKeys buckets are all in use.
const overflowKey = "overflow"

// NewThrottle makes a throttle; register its Collectors to export the counters.
func NewThrottle(cfg ThrottleConfig) *Throttle {
	if cfg.Burst <= 0 {
		cfg.Burst = 10
	}
	if cfg.Refill <= 0 {
		cfg.Refill = 6 * time.Second
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 16384
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Throttle{cfg: cfg, buckets: map[string]*bucket{},
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_auth_failures_total",
			Help: "Refused credentials by where they were presented and why."}, []string{"surface", "reason"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_auth_throttled_total",
			Help: "Requests answered 429 because their source or token failed too often."}, []string{"surface"}),
	}
}

// Collectors returns the throttle's counters, for a Prometheus registry.
func (t *Throttle) Collectors() []prometheus.Collector {
	return []prometheus.Collector{t.failures, t.throttled}
}

// Keys names the buckets of a request: its source address, and the operator token
// the presented credential names when the store has that token (the id of a token that
// does not exist is the caller's free choice, so it gets no bucket of its own).
func Keys(store TokenReader, remoteAddr, tokenID string) []string {
	keys := []string{"addr:" + SourceOf(remoteAddr)}
	if tokenID != "" {
		if _, ok := store.Token(tokenID); ok {
			keys = append(keys, "token:"+tokenID)
		}
	}
	return keys
}

// Allow reports whether every bucket of keys has a failure left; if not, it counts a
// throttled request and says how long until one has.
func (t *Throttle) Allow(surface Surface, keys []string) (retryAfter time.Duration, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	for _, k := range keys {
		b, found := t.buckets[k]
		if !found {
			continue // a key that never failed has a full bucket
		}
		if lvl := t.level(b, now); lvl < 1 {
			retryAfter = max(retryAfter, time.Duration((1-lvl)*float64(t.cfg.Refill)))
		}
	}
	if retryAfter > 0 {
		t.throttled.WithLabelValues(string(surface)).Inc()
		return retryAfter, false
	}
	return 0, true
}

// Fail counts a refused credential and takes one failure from each bucket of keys.
func (t *Throttle) Fail(surface Surface, reason Reason, keys []string) {
	t.Count(surface, reason)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Now()
	for _, k := range keys {
		b := t.bucketFor(k, now)
		b.level, b.at = max(t.level(b, now)-1, 0), now
	}
}

// Count counts a refused credential without draining a bucket: for refusals that say
// nothing about guessing (a session that expired or was logged out, a foreign form).
func (t *Throttle) Count(surface Surface, reason Reason) {
	t.failures.WithLabelValues(string(surface), string(reason)).Inc()
}

// RetryAfterSeconds is the Retry-After header value for a wait: whole seconds, at least 1.
func RetryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

func (t *Throttle) level(b *bucket, now time.Time) float64 {
	refilled := float64(now.Sub(b.at)) / float64(t.cfg.Refill)
	return min(float64(t.cfg.Burst), b.level+max(refilled, 0))
}

// bucketFor returns the bucket of k, making a full one. When MaxKeys buckets exist, the
// full ones (which hold nothing a fresh bucket would not) are dropped first; if none
// is, new keys share the overflow bucket, so a flood of addresses costs bounded memory.
func (t *Throttle) bucketFor(k string, now time.Time) *bucket {
	if b, ok := t.buckets[k]; ok {
		return b
	}
	if len(t.buckets) >= t.cfg.MaxKeys {
		for key, b := range t.buckets {
			if t.level(b, now) >= float64(t.cfg.Burst) {
				delete(t.buckets, key)
			}
		}
		if len(t.buckets) >= t.cfg.MaxKeys {
			k = overflowKey
			if b, ok := t.buckets[k]; ok {
				return b
			}
		}
	}
	b := &bucket{level: float64(t.cfg.Burst), at: now}
	t.buckets[k] = b
	return b
}

// SourceOf is the throttling key of a peer address: the IPv4 address, or the /64 of an
// IPv6 one (a single host usually holds a whole /64).
func SourceOf(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	addr, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return host
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		return netip.PrefixFrom(addr, 64).Masked().String()
	}
	return addr.String()
}

// StoredTokenID returns the id an operator or enrolment token ("rvo_<id>_<secret>")
// names, without checking it.
func StoredTokenID(bearer string) (string, bool) {
	rest, ok := strings.CutPrefix(bearer, "rvo_")
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "_")
	if !ok || id == "" {
		return "", false
	}
	return id, true
}
