package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

type tokens struct {
	gen     uint64
	known   bool
	tickets map[string]string // hash → MAC
}

func (tokens) Token(string) (state.Token, bool)           { return state.Token{}, false }
func (t tokens) TokenGen(shared.MachineID) (uint64, bool) { return t.gen, t.known }
func (tokens) Cluster() state.Cluster                     { return state.Cluster{TokenSecret: "s3cret"} }
func (t tokens) TicketMAC(hash string, _ time.Time) (string, bool) {
	mac, ok := t.tickets[hash]
	return mac, ok
}

// TestBootTickets: an outstanding ticket resolves to a ticket principal carrying its
// hash (never the ticket); an unknown one may be behind; a malformed one is refused.
func TestBootTickets(t *testing.T) {
	ticket, hash := NewTicket()
	if err := shared.ValidateTicket(ticket); err != nil {
		t.Fatalf("NewTicket made an invalid ticket: %v", err)
	}
	store := tokens{tickets: map[string]string{hash: "52:54:00:12:34:56"}}
	p, err := Resolve(store, ticket)
	if err != nil || p.Kind != KindTicket || p.Ticket != hash {
		t.Fatalf("outstanding ticket: got %+v, %v; want a ticket principal with its hash", p, err)
	}
	other, _ := NewTicket()
	if _, err := Resolve(store, other); !errors.Is(err, ErrBehind) {
		t.Fatalf("unknown ticket: got %v, want ErrBehind (the caller waits, then refuses)", err)
	}
	if _, err := Resolve(store, shared.TicketPrefix+"zz"); err == nil || errors.Is(err, ErrBehind) {
		t.Fatalf("malformed ticket: got %v, want a refusal", err)
	}
	if got := Redact("x " + ticket + " y"); got != "x [redacted] y" {
		t.Fatalf("Redact left the ticket: %q", got)
	}
}

// TestMachineTokenGenerations: the current generation is accepted, an older one is
// revoked, a newer genuine one means this coordinator is behind, a forged one is refused.
func TestMachineTokenGenerations(t *testing.T) {
	const id = shared.MachineID("m-00112233aabbccdd")
	tests := []struct {
		name    string
		token   string
		stored  uint64
		unknown bool // the store has not applied the machine's registration
		refused bool
		behind  bool
	}{
		{name: "current", token: MachineToken("s3cret", id, 2), stored: 2},
		{name: "revoked by a newer generation", token: MachineToken("s3cret", id, 1), stored: 2, refused: true},
		{name: "issued by a write not applied here yet", token: MachineToken("s3cret", id, 3), stored: 2, behind: true},
		{name: "machine not applied here yet", token: MachineToken("s3cret", id, 0), unknown: true, behind: true},
		{name: "forged", token: MachineToken("other", id, 3), stored: 2, refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Resolve(tokens{gen: tt.stored, known: !tt.unknown}, tt.token)
			switch {
			case tt.behind:
				if !errors.Is(err, ErrBehind) {
					t.Fatalf("err = %v; want ErrBehind", err)
				}
			case tt.refused:
				if err == nil || errors.Is(err, ErrBehind) {
					t.Fatalf("err = %v; want a refusal", err)
				}
			default:
				if err != nil || p.MachineID != id || p.Kind != KindMachine {
					t.Fatalf("principal %+v, err %v", p, err)
				}
			}
		})
	}
}
