// Package auth resolves a bearer token to a principal and makes the tokens.
//
// Three kinds of token, each with a prefix so a leaked one is recognisable in a scan:
//   - operator and enrolment tokens "rvo_<id>_<secret>": a random secret; the store keeps
//     only its SHA-256, so a snapshot does not reveal it. Role admin, viewer or enrol.
//   - machine tokens "rvm_<machine id>_<gen>_<mac>": an HMAC of the machine id and its
//     token generation under the cluster's token secret. Bound to the machine id, never
//     stored, revoked by bumping the generation (retire does).
//   - the internal token "rvi_<mac>", with which followers forward writes to the leader.
//   - boot tickets "rvt_<random>" (see shared.ValidateTicket): one per network boot, put in
//     the iPXE script only for a MAC the boot services expect; stored as a SHA-256, spent
//     by the registration, which must come from a machine with that MAC.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// Kind is what a principal is.
type Kind string

const (
	KindAdmin    Kind = "admin"
	KindViewer   Kind = "viewer"
	KindEnrol    Kind = "enrol"
	KindMachine  Kind = "machine"
	KindInternal Kind = "internal"
	KindTicket   Kind = "ticket"
)

// Principal is who is calling.
type Principal struct {
	Kind      Kind
	Name      string           // token name, for timelines ("by alice")
	MachineID shared.MachineID // for machine tokens
	TokenGen  uint64           // for machine tokens: the generation presented
	Ticket    string           // for boot tickets: the SHA-256 of the ticket, hex
}

// CanRead reports whether the principal may read the fleet.
func (p Principal) CanRead() bool { return p.Kind == KindAdmin || p.Kind == KindViewer }

// IsAdmin reports whether the principal may act.
func (p Principal) IsAdmin() bool { return p.Kind == KindAdmin }

// TokenReader is the part of the store auth needs.
type TokenReader interface {
	Token(id string) (state.Token, bool)
	TokenGen(id shared.MachineID) (gen uint64, known bool)
	TicketMAC(hash string, now time.Time) (mac string, ok bool)
	Cluster() state.Cluster
}

// Resolve checks a bearer token and returns who it belongs to.
func Resolve(store TokenReader, bearer string) (Principal, error) {
	switch {
	case strings.HasPrefix(bearer, "rvo_"):
		return resolveStored(store, bearer)
	case strings.HasPrefix(bearer, "rvm_"):
		return resolveMachine(store, bearer)
	case strings.HasPrefix(bearer, shared.TicketPrefix):
		return resolveTicket(store, bearer)
	case strings.HasPrefix(bearer, "rvi_"):
		if secret := store.Cluster().TokenSecret; secret != "" && hmac.Equal([]byte(bearer), []byte(InternalToken(secret))) {
			return Principal{Kind: KindInternal, Name: "coordinator"}, nil
		}
	}
	return Principal{}, ErrUnknown
}

// The reasons Resolve refuses a token (besides ErrBehind). Callers count them by kind,
// never by the token presented.
var (
	ErrMalformed = errors.New("malformed token")
	ErrUnknown   = errors.New("unknown or revoked token")
)

func resolveStored(store TokenReader, bearer string) (Principal, error) {
	parts := strings.Split(bearer, "_")
	if len(parts) != 3 {
		return Principal{}, ErrMalformed
	}
	t, ok := store.Token(parts[1])
	if !ok {
		return Principal{}, ErrUnknown
	}
	sum := sha256.Sum256([]byte(parts[2]))
	if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(t.SecretHash)) != 1 {
		return Principal{}, ErrUnknown
	}
	return Principal{Kind: Kind(t.Role), Name: t.Name}, nil
}

func resolveMachine(store TokenReader, bearer string) (Principal, error) {
	parts := strings.Split(bearer, "_")
	if len(parts) != 4 {
		return Principal{}, fmt.Errorf("%w (a machine token has four parts)", ErrMalformed)
	}
	id := shared.MachineID(parts[1])
	gen, err := strconv.ParseUint(parts[2], 10, 64)
	secret := store.Cluster().TokenSecret
	if err != nil || id.Validate() != nil || secret == "" ||
		!hmac.Equal([]byte(bearer), []byte(MachineToken(secret, id, gen))) {
		return Principal{}, fmt.Errorf("%w (machine token)", ErrUnknown)
	}
	switch current, known := store.TokenGen(id); {
	case !known || gen > current:
		// Genuine, but issued by a write this coordinator has not applied yet (the
		// registration or a token rotation, made through another coordinator a moment ago).
		return Principal{}, ErrBehind
	case gen < current:
		return Principal{}, fmt.Errorf("%w (machine token)", ErrUnknown)
	}
	return Principal{Kind: KindMachine, Name: string(id), MachineID: id, TokenGen: gen}, nil
}

// resolveTicket accepts an outstanding boot ticket. An unknown one may have been issued
// by a write this coordinator has not applied yet (ErrBehind: the caller waits a moment);
// whether it is still unspent when the registration applies is decided in the log.
func resolveTicket(store TokenReader, bearer string) (Principal, error) {
	if err := shared.ValidateTicket(bearer); err != nil {
		return Principal{}, fmt.Errorf("%w (a boot ticket)", ErrMalformed)
	}
	hash := Hash(bearer)
	mac, ok := store.TicketMAC(hash, time.Now())
	if !ok {
		return Principal{}, ErrBehind
	}
	return Principal{Kind: KindTicket, Name: "boot ticket for " + mac, Ticket: hash}, nil
}

// NewTicket makes a boot ticket: the ticket for the script and the hash to store.
func NewTicket() (ticket, hash string) {
	ticket = shared.TicketPrefix + randomHex(24)
	return ticket, Hash(ticket)
}

// Hash is what the store keeps of a one-time secret (a ticket, a registration attempt):
// its SHA-256, hex. They are random, so no salt or stretching is needed.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ErrBehind: the token is genuine but this coordinator has not yet applied the write
// that issued it. The caller waits for replication, or asks another coordinator.
var ErrBehind = errors.New("this coordinator has not caught up with the write that issued the machine token")

// MachineToken computes the token bound to a machine id and generation.
func MachineToken(secret string, id shared.MachineID, gen uint64) string {
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "machine:%s:%d", id, gen)
	return fmt.Sprintf("rvm_%s_%d_%s", id, gen, hex.EncodeToString(mac.Sum(nil)))
}

// InternalToken is the token coordinators use among themselves.
func InternalToken(secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("internal"))
	return "rvi_" + hex.EncodeToString(mac.Sum(nil))
}

// NewToken makes a stored token: the record to replicate and the secret to show once.
func NewToken(name string, role shared.TokenRole, now time.Time) (state.Token, string) {
	id := randomHex(6)
	secret := randomHex(24)
	sum := sha256.Sum256([]byte(secret))
	rec := state.Token{ID: id, Name: name, Role: role, SecretHash: hex.EncodeToString(sum[:]), CreatedAt: now}
	return rec, "rvo_" + id + "_" + secret
}

// NewSecret returns n random bytes, hex-encoded.
func NewSecret(n int) string { return randomHex(n) }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("auth: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// Redact replaces anything that looks like a Rivet token or a swarm join token in s, for
// log lines that quote foreign text.
func Redact(s string) string {
	for _, prefix := range []string{"rvo_", "rvm_", "rvi_", shared.TicketPrefix, "SWMTKN-"} {
		for {
			i := strings.Index(s, prefix)
			if i < 0 {
				break
			}
			j := i + len(prefix)
			for j < len(s) && (isTokenByte(s[j])) {
				j++
			}
			s = s[:i] + "[redacted]" + s[j:]
		}
	}
	return s
}

func isTokenByte(c byte) bool {
	return c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
