package shared

import (
	"fmt"
	"strings"
)

// TicketPrefix starts every boot ticket, so a leaked one is recognisable in a scan.
const TicketPrefix = "rvt_"

// ticketHexLen is the length of a ticket's random part: 24 bytes, hex-encoded.
const ticketHexLen = 48

// ValidateTicket checks a boot ticket's form (not whether the coordinator knows it).
//
// A boot ticket is what the boot network gives a machine: the coordinator issues one per
// network boot, in the iPXE script, only to a MAC its boot services expect now; it is
// single-use, short-lived and bound to that MAC. It lets a machine register, and nothing
// more: an unknown machine stays unadmitted until the operator's intent admits it.
func ValidateTicket(t string) error {
	rest, ok := strings.CutPrefix(t, TicketPrefix)
	if !ok || len(rest) != ticketHexLen {
		return fmt.Errorf("a boot ticket is %q followed by %d hex digits", TicketPrefix, ticketHexLen)
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("a boot ticket is %q followed by %d hex digits", TicketPrefix, ticketHexLen)
		}
	}
	return nil
}
