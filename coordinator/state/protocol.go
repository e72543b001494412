package state

import (
	"fmt"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// The cluster's protocol: which command types its log may hold. It only ever rises, by
// RaiseProtocol, which the leader writes once every member speaks the new protocol
// (coordinator/versions.go). Commands newer than the cluster's protocol are refused at
// the write path (NeedProtocol), so a member that has not been upgraded yet never meets
// an entry it cannot apply.

func (RaiseProtocol) command() {}

// RaiseProtocol moves the cluster to protocol To. Its type is itself of protocol 2: the
// first release never sees one, because it is written only once every member is newer.
type RaiseProtocol struct {
	To   int       `json:"to"`
	Time time.Time `json:"time"`
	// Members is what the leader saw, for the log: "c1=2 c2=2 c3=2".
	Members string `json:"members,omitempty"`
}

// RuleProtocol: the command needs a protocol the cluster does not run at yet, or a
// raise that would not raise.
const RuleProtocol Rule = "protocol"

// Protocol is the protocol the cluster runs at.
func (s *Store) Protocol() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return shared.ProtocolOf(s.data.Protocol)
}

// ApplyRaiseProtocol raises the cluster's protocol; it never lowers it.
func (s *Store) ApplyRaiseProtocol(c RaiseProtocol, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		have := shared.ProtocolOf(s.data.Protocol)
		if c.To <= have {
			return Result{}, reject(KindConflict, RuleProtocol, "",
				"the cluster already runs at protocol %d, not below %d", have, c.To)
		}
		if c.To > shared.Protocol {
			// Every coordinator applies this entry; one that cannot speak To is older than
			// the cluster. Refusing here would diverge from the others: stop loudly.
			panic(fmt.Sprintf("state: the cluster was raised to protocol %d at index %d, this coordinator speaks %d: upgrade it (docs/upgrades.md)",
				c.To, index, shared.Protocol))
		}
		s.data.Protocol = c.To
		return Result{}, nil
	})
}

// NeedProtocol is the refusal of a command of protocol need while the cluster runs at
// have: nothing was written.
func NeedProtocol(command string, need, have int) error {
	return reject(KindConflict, RuleProtocol, "",
		"%s needs every coordinator at protocol %d, and the cluster runs at %d: upgrade the members `rivet members upgrade-check` lists, then try again",
		command, need, have)
}
