package dhcp

import (
	"net"
	"sync/atomic"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rivetmetal/rivet/shared"
)

// EventKind says what happened to one datagram.
type EventKind string

const (
	EventRequest   EventKind = "request"   // a well-formed request arrived (then: reply or ignored)
	EventReply     EventKind = "reply"     // the server answered it
	EventIgnored   EventKind = "ignored"   // the server chose not to answer (see Reason)
	EventMalformed EventKind = "malformed" // not a DHCP request at all; dropped
	EventDropped   EventKind = "dropped"   // over the per-source limit; not even decoded
)

// ReasonRateLimited is the Reason of an EventDropped.
const ReasonRateLimited = "rate_limited"

// Event is one step in the life of one datagram, handed to Config.OnEvent. The hook runs
// on the packet path: it must be quick (a counter increment, not a network call).
type Event struct {
	Kind    EventKind
	Port    int // 67 or 4011
	MAC     net.HardwareAddr
	Arch    Arch
	Type    dhcpv4.MessageType // of the request, or of the reply for EventReply
	Target  shared.BootTarget  // the Booter's decision, when one was asked
	Machine shared.MachineID   // known machine, if any
	Reason  string             // for EventIgnored and EventMalformed
}

// Stats are the server's counters since it started. Every datagram is either malformed,
// or a request that was then replied to or ignored: sum(Requests) = Replies + Ignored.
type Stats struct {
	Requests   map[string]uint64 // by client firmware (Arch.String())
	Replies    uint64
	Ignored    uint64 // includes RELEASE and DECLINE, which never get a reply
	Malformed  uint64
	Dropped    uint64 // over the per-source limit (not in Requests)
	SendErrors uint64
}

type counters struct {
	requests   [numArchs]atomic.Uint64
	replies    atomic.Uint64
	ignored    atomic.Uint64
	malformed  atomic.Uint64
	dropped    atomic.Uint64
	sendErrors atomic.Uint64
}

func (c *counters) snapshot() Stats {
	st := Stats{Requests: make(map[string]uint64, numArchs),
		Replies: c.replies.Load(), Ignored: c.ignored.Load(),
		Malformed: c.malformed.Load(), Dropped: c.dropped.Load(), SendErrors: c.sendErrors.Load()}
	for a := Arch(0); a < numArchs; a++ {
		st.Requests[a.String()] = c.requests[a].Load()
	}
	return st
}

// Total is the number of well-formed requests of every firmware.
func (s Stats) Total() uint64 {
	var n uint64
	for _, v := range s.Requests {
		n += v
	}
	return n
}
