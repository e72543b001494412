package auth

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// clock is a settable time for the throttle.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestThrottle(c *clock, maxKeys int) *Throttle {
	return NewThrottle(ThrottleConfig{Burst: 10, Refill: 6 * time.Second, MaxKeys: maxKeys, Now: c.now})
}

// TestThrottleRefusesAfterTheBurstAndRefills: ten failures from one address pass, the
// eleventh request is refused with the time until the bucket refills by one; after that
// time one more failure is allowed, not more; another address is not affected.
func TestThrottleRefusesAfterTheBurstAndRefills(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	th := newTestThrottle(c, 0)
	keys := []string{"addr:192.0.2.1"}
	for i := range 10 {
		if _, ok := th.Allow(SurfaceLogin, keys); !ok {
			t.Fatalf("failure %d refused; the burst is 10", i+1)
		}
		th.Fail(SurfaceLogin, ReasonUnknown, keys)
	}
	wait, ok := th.Allow(SurfaceLogin, keys)
	if ok || wait <= 0 || wait > 6*time.Second {
		t.Fatalf("after 10 failures: allowed %v, retry after %s; want refused for at most 6 s", ok, wait)
	}
	if _, ok := th.Allow(SurfaceLogin, []string{"addr:192.0.2.2"}); !ok {
		t.Fatal("another address is throttled too")
	}
	c.t = c.t.Add(wait)
	if _, ok := th.Allow(SurfaceLogin, keys); !ok {
		t.Fatalf("still refused after the %s it said to wait", wait)
	}
	th.Fail(SurfaceLogin, ReasonUnknown, keys)
	if _, ok := th.Allow(SurfaceLogin, keys); ok {
		t.Fatal("a second failure allowed after one refill period")
	}
	if got := counterValue(t, th.failures.WithLabelValues("login", "unknown")); got != 11 {
		t.Errorf("failures counter %v, want 11", got)
	}
	if got := counterValue(t, th.throttled.WithLabelValues("login")); got != 2 {
		t.Errorf("throttled counter %v, want 2", got)
	}
	if got := RetryAfterSeconds(wait); got < 1 || got > 6 {
		t.Errorf("Retry-After %d s for a wait of %s", got, wait)
	}
}

// TestThrottleByTokenAcrossAddresses: guesses at one existing token from many addresses
// drain that token's bucket; an id the store does not have gets no bucket (its name is
// the caller's choice).
func TestThrottleByTokenAcrossAddresses(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	th := newTestThrottle(c, 0)
	store := oneToken{id: "abc123"}
	for i := range 10 {
		keys := Keys(store, fmt.Sprintf("192.0.2.%d:4000", i), "abc123")
		if len(keys) != 2 {
			t.Fatalf("keys %v, want the address and the token", keys)
		}
		th.Fail(SurfaceAPI, ReasonUnknown, keys)
	}
	if _, ok := th.Allow(SurfaceAPI, Keys(store, "198.51.100.9:1", "abc123")); ok {
		t.Fatal("a fresh address guessing at the same token is not throttled")
	}
	if keys := Keys(store, "198.51.100.9:1", "made-up"); len(keys) != 1 {
		t.Fatalf("keys for an id the store lacks: %v, want the address only", keys)
	}
}

// TestThrottleMemoryIsBounded: a flood of addresses keeps at most MaxKeys buckets (plus
// the shared overflow one), and full buckets are dropped to make room.
func TestThrottleMemoryIsBounded(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	th := newTestThrottle(c, 8)
	for i := range 1000 {
		th.Fail(SurfaceAPI, ReasonMalformed, []string{fmt.Sprintf("addr:10.0.%d.%d", i/256, i%256)})
	}
	if n := len(th.buckets); n > 9 {
		t.Fatalf("%d buckets after 1000 addresses, want at most 9", n)
	}
	c.t = c.t.Add(time.Hour) // every bucket is full again
	th.Fail(SurfaceAPI, ReasonMalformed, []string{"addr:203.0.113.1"})
	if _, ok := th.buckets["addr:203.0.113.1"]; !ok {
		t.Fatal("a new address shares the overflow bucket although the old ones have refilled")
	}
}

func TestSourceOf(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:5555":                  "192.0.2.7",
		"[::ffff:192.0.2.7]:5555":         "192.0.2.7",
		"[2001:db8:1:2:aaaa::1]:443":      "2001:db8:1:2::/64",
		"[2001:db8:1:2:bbbb::9%eth0]:443": "2001:db8:1:2::/64",
		"not an address":                  "not an address",
	} {
		if got := SourceOf(in); got != want {
			t.Errorf("SourceOf(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"rvo_abc_def": "abc", "rvo__x": "", "rvm_a_1_b": "", "rvo_abc": ""} {
		if got, _ := StoredTokenID(in); got != want {
			t.Errorf("StoredTokenID(%q) = %q, want %q", in, got, want)
		}
	}
}

// oneToken is a store holding one operator token.
type oneToken struct{ id string }

func (o oneToken) Token(id string) (state.Token, bool) {
	return state.Token{ID: o.id, Role: "admin"}, id == o.id
}
func (oneToken) TokenGen(shared.MachineID) (uint64, bool)   { return 0, false }
func (oneToken) TicketMAC(string, time.Time) (string, bool) { return "", false }
func (oneToken) Cluster() state.Cluster                     { return state.Cluster{TokenSecret: "s"} }

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
