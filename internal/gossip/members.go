package gossip

import (
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/serf/serf"

	"github.com/rivetmetal/rivet/shared"
)

// Members is a Serf pool as the wire lists it, sorted by name; members whose tags do
// not parse (not Rivet's, or from a newer version) are left out.
func Members(s *serf.Serf) []shared.SerfMember {
	var out []shared.SerfMember
	for _, m := range s.Members() {
		tags, err := shared.ParseTags(m.Tags)
		if err != nil {
			continue
		}
		out = append(out, shared.SerfMember{Name: m.Name, Addr: MemberAddr(m), Status: m.Status.String(), Tags: tags})
	}
	slices.SortFunc(out, func(a, b shared.SerfMember) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// MemberAddr is a member's gossip host:port.
func MemberAddr(m serf.Member) string {
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}
