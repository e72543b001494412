package coordinator

import (
	"context"
	"net"
	"time"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
)

// TicketTTL is how long a boot ticket stays good: from the iPXE script to the agent's
// registration is seconds in a VM and a few minutes on metal (kernel and initramfs over
// HTTP, drivers, DHCP). A ticket is spent by its first registration in any case.
const TicketTTL = 15 * time.Minute

// IssueTicket implements netboot.TicketIssuer: a one-time boot ticket for mac, recorded
// (hashed) through Raft so that any coordinator can accept it. The boot services call it
// only for a MAC they expect to boot now.
func (s *Server) IssueTicket(ctx context.Context, mac net.HardwareAddr) (string, error) {
	ticket, hash := auth.NewTicket()
	now := time.Now().UTC()
	if _, err := s.Apply(ctx, state.IssueTicket{Hash: hash, MAC: mac.String(), Expires: now.Add(TicketTTL), Time: now}); err != nil {
		return "", err
	}
	s.metrics.ticketsIssued.Inc()
	return ticket, nil
}
