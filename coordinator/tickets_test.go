package coordinator_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/shared"
)

// TestIssuedTicketIsStoredHashedAndBound: a ticket from the boot services resolves, on
// the store, to the MAC it was issued for; the store holds its hash, never the ticket.
func TestIssuedTicketIsStoredHashedAndBound(t *testing.T) {
	c := startQuiet(t)
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	ticket, err := c.Server.IssueTicket(context.Background(), mac)
	if err != nil {
		t.Fatal(err)
	}
	if err := shared.ValidateTicket(ticket); err != nil {
		t.Fatalf("issued %q: %v", ticket, err)
	}
	if got, ok := c.Server.Store().TicketMAC(auth.Hash(ticket), time.Now()); !ok || got != mac.String() {
		t.Fatalf("the store has the ticket for %q (found %v), want %s", got, ok, mac)
	}
	if _, ok := c.Server.Store().TicketMAC(ticket, time.Now()); ok {
		t.Fatal("the store is keyed by the ticket itself, not its hash")
	}
}

// BenchmarkIssueTicket is what a network boot's iPXE script costs the coordinator beyond
// serving it: one Raft write (single node, embedded store).
func BenchmarkIssueTicket(b *testing.B) {
	c := startQuiet(b)
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Server.IssueTicket(ctx, mac); err != nil {
			b.Fatal(err)
		}
	}
}

func startQuiet(t testing.TB) *coordinatortest.InProcess {
	t.Helper()
	c, err := coordinatortest.StartInProcess(context.Background(), t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)),
		coordinator.DaemonConfig{GossipAddr: "off"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}
