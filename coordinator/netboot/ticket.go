package netboot

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TicketIssuer hands out the one-time ticket a booting machine's agent registers with
// (rivet.ticket on its kernel line). The coordinator implements it with its state.
type TicketIssuer interface {
	IssueTicket(ctx context.Context, mac net.HardwareAddr) (string, error)
}

// Outcomes of a ticket decision, for Config.TicketEvent.
const (
	TicketIssued         = "issued"          // the script carries a ticket
	TicketNotExpected    = "not_expected"    // no PXE exchange with DHCP from that MAC lately
	TicketWrongRequester = "wrong_requester" // the HTTP client is not at that MAC's address
	TicketIssueFailed    = "issue_failed"    // the issuer failed or gave a ticket a script cannot carry
)

// expectFor is how long after its PXE exchange with DHCP a MAC may fetch a ticketed
// script: firmware loads iPXE and iPXE asks for its script within seconds; minutes
// cover slow TFTP and UEFI firmware that retries.
const expectFor = 5 * time.Minute

// maxExpected bounds the MACs remembered; a flood of DISCOVERs with random MACs then
// costs a fixed amount of memory (and pushes out the oldest, which only costs a ticket).
const maxExpected = 8192

// expectations are the MACs DHCP recently gave boot information to.
type expectations struct {
	mu   sync.Mutex
	seen map[[6]byte]time.Time
	now  func() time.Time
}

func (e *expectations) saw(mac net.HardwareAddr) {
	if len(mac) != 6 {
		return
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) >= maxExpected {
		e.evictLocked(now)
	}
	e.seen[[6]byte(mac)] = now
}

// evictLocked forgets expired MACs, or, if none has expired, the oldest.
func (e *expectations) evictLocked(now time.Time) {
	var oldest [6]byte
	var oldestAt time.Time
	for m, at := range e.seen {
		if now.Sub(at) > expectFor {
			delete(e.seen, m)
		} else if oldestAt.IsZero() || at.Before(oldestAt) {
			oldest, oldestAt = m, at
		}
	}
	if len(e.seen) >= maxExpected {
		delete(e.seen, oldest)
	}
}

func (e *expectations) recent(mac net.HardwareAddr) bool {
	if len(mac) != 6 {
		return false
	}
	e.mu.Lock()
	at, ok := e.seen[[6]byte(mac)]
	e.mu.Unlock()
	return ok && e.now().Sub(at) <= expectFor
}

// ticketFor returns the ticket for mac's agent script, or "" when this request does not
// get one: mac must have had a PXE exchange with DHCP lately, and the HTTP client must
// be at mac's address (full mode: its lease; proxy mode: the neighbour table). Every
// refusal is counted and logged (throttled).
func (s *Server) ticketFor(r *http.Request, mac net.HardwareAddr) string {
	if s.cfg.Tickets == nil {
		return ""
	}
	outcome := s.checkRequester(r, mac)
	if outcome == TicketIssued {
		ticket, err := s.cfg.Tickets.IssueTicket(r.Context(), mac)
		switch {
		case err != nil:
			s.quiet.Warn("cannot issue a boot ticket", "mac", mac.String(), "err", err)
			outcome = TicketIssueFailed
		case ticket == "" || !scriptSafe(ticket):
			s.quiet.Warn("the boot ticket cannot travel in an iPXE script", "mac", mac.String())
			outcome = TicketIssueFailed
		default:
			s.ticketEvent(outcome)
			return ticket
		}
	} else {
		s.quiet.Warn("boot script served without a ticket", "mac", mac.String(), "remote", r.RemoteAddr, "why", outcome)
	}
	s.ticketEvent(outcome)
	return ""
}

func (s *Server) ticketEvent(outcome string) {
	if s.cfg.TicketEvent != nil {
		s.cfg.TicketEvent(outcome)
	}
}

// checkRequester says whether the sender of r is the machine with mac, as far as the
// boot services can tell: TicketIssued if so, else the reason.
func (s *Server) checkRequester(r *http.Request, mac net.HardwareAddr) string {
	if !s.expect.recent(mac) {
		return TicketNotExpected
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return TicketWrongRequester
	}
	from := net.IP(ap.Addr().Unmap().AsSlice())
	var at net.HardwareAddr
	switch s.cfg.Mode {
	case ModeFull:
		if leased := s.dhcp.LeasedTo(mac); leased != nil && leased.Equal(from) {
			at = mac
		}
	case ModeProxy:
		s.mu.RLock()
		nt := s.neighbours
		s.mu.RUnlock()
		at = nt.lookup(from)
	}
	if !bytes.Equal(at, mac) {
		return TicketWrongRequester
	}
	return TicketIssued
}

// neighbourTable reads the boot interface's IPv4 neighbour (ARP) table over a netlink
// socket opened in Run's network namespace, whichever thread asks later.
type neighbourTable struct {
	mu      sync.Mutex // the handle's socket serves one request at a time
	h       *netlink.Handle
	ifindex int
}

func openNeighbourTable(iface string) (*neighbourTable, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("netboot: interface %q: %w", iface, err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netboot: netlink socket for the neighbour table of %s: %w", iface, err)
	}
	return &neighbourTable{h: h, ifindex: ifc.Index}, nil
}

// lookup returns the MAC the kernel has for ip on the boot interface, or nil. The
// client's ARP request for our address, or ours for its SYN-ACK, put it there before
// its HTTP request could arrive.
func (n *neighbourTable) lookup(ip net.IP) net.HardwareAddr {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	list, err := n.h.NeighList(n.ifindex, netlink.FAMILY_V4)
	n.mu.Unlock()
	if err != nil {
		return nil
	}
	for _, e := range list {
		if e.IP.Equal(ip) && e.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED|netlink.NUD_NOARP) == 0 {
			return e.HardwareAddr
		}
	}
	return nil
}

func (n *neighbourTable) close() { n.h.Close() }
