package status

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/fsm"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

type storeOnly struct{ store *state.Store }

func (b storeOnly) Store() *state.Store     { return b.store }
func (b storeOnly) Members() shared.Members { return shared.Members{} }
func (b storeOnly) Apply(context.Context, state.Command) (state.Result, error) {
	return state.Result{}, nil
}

// FuzzVerifySession feeds cookie values to the session decoder: it never panics, and
// nothing but the one cookie this handler signed verifies (the fuzzer does not know the
// secret, so any other value that verified would be a forgery).
func FuzzVerifySession(f *testing.F) {
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	store := state.New()
	tok := state.Token{ID: "0a1b2c3d4e5f", Name: "alice", Role: "admin", SecretHash: "00", CreatedAt: now}
	data, _ := fsm.Encode(state.InitCluster{AdminToken: tok, Cluster: state.Cluster{CACertPEM: "ca", TokenSecret: "fuzz-secret"}})
	fsm.Apply(store, data, 1)
	h := New(Config{Backend: storeOnly{store}, Now: func() time.Time { return now }})
	// Built as newSession does, with a fixed nonce: every fuzz worker must agree on it.
	fields := []string{"v1", tok.ID, "0", strconv.FormatInt(now.Unix(), 10), "0011223344556677"}
	genuine := strings.Join(append(fields, h.sign(append([]string{"status-session"}, fields...)...)), ".")
	if h.verifySession(h.newSession(session{tokenID: tok.ID, issued: now})) == nil {
		f.Fatal("a cookie from newSession does not verify")
	}
	parts := strings.Split(genuine, ".")
	f.Add(genuine)
	f.Add(strings.Join(append(append([]string{}, parts[:2]...), append([]string{"1"}, parts[3:]...)...), "."))
	f.Add(tok.ID + "." + "1764655200" + "." + parts[5]) // the old three-part shape
	f.Add("v1.....")
	f.Add("v1." + tok.ID + ".18446744073709551616.-9223372036854775808.00." + parts[5])
	f.Fuzz(func(t *testing.T, value string) {
		s := h.verifySession(value)
		if s == nil {
			return
		}
		if value != genuine {
			t.Fatalf("a cookie the handler never signed verified: %q", value)
		}
		if _, reason := h.sessionPrincipal(*s); reason != "" {
			t.Fatalf("the genuine cookie is refused: %s", reason)
		}
	})
}
