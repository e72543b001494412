package state

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// Admission and identity: who may become a machine, and who may speak for an existing one.
// The rules live here, in the FSM's log order, so that two racing claims are judged one
// after the other on every coordinator alike.

// Ticket is an outstanding boot ticket. Only the SHA-256 of the ticket is kept (as the
// key of Data.Tickets), so neither a snapshot nor the log reveals one.
type Ticket struct {
	MAC     string    `json:"mac"`
	Expires time.Time `json:"expires"`
	Issued  time.Time `json:"issued"`
}

// TicketsPerMAC bounds the outstanding tickets of one MAC: a machine that fetches its
// script again and again (iPXE retries, a reboot loop) displaces its oldest tickets.
const TicketsPerMAC = 4

// ApplyIssueTicket records a ticket and drops expired ones (by the command's time, so
// every coordinator drops the same).
func (s *Store) ApplyIssueTicket(c IssueTicket, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		var same []string
		for h, t := range s.data.Tickets {
			switch {
			case !t.Expires.After(c.Time):
				delete(s.data.Tickets, h)
			case t.MAC == c.MAC:
				same = append(same, h)
			}
		}
		// Oldest first; ties by hash so every coordinator drops the same one.
		sort.Slice(same, func(i, j int) bool {
			a, b := s.data.Tickets[same[i]], s.data.Tickets[same[j]]
			if !a.Issued.Equal(b.Issued) {
				return a.Issued.Before(b.Issued)
			}
			return same[i] < same[j]
		})
		for len(same) >= TicketsPerMAC {
			delete(s.data.Tickets, same[0])
			same = same[1:]
		}
		s.data.Tickets[c.Hash] = Ticket{MAC: c.MAC, Expires: c.Expires, Issued: c.Time}
		return Result{}, nil
	})
}

// TicketMAC returns the MAC an outstanding, unexpired ticket was issued for.
func (s *Store) TicketMAC(hash string, now time.Time) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.data.Tickets[hash]
	if !ok || !t.Expires.After(now) {
		return "", false
	}
	return t.MAC, true
}

// ApplyPutExpected stores expected machines (replacing rows with the same key). Every
// machine that now matches a row is admitted if it was not, and takes the row's labels
// and host name: the import is the operator's word on them.
func (s *Store) ApplyPutExpected(c PutExpected, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		imported := map[string]bool{}
		for i := range c.Machines {
			e := c.Machines[i]
			key := e.Key()
			e.Power = shared.PowerInfo{} // the coordinator's record, never the importer's
			if old, ok := s.data.Expected[key]; ok {
				s.unindexExpected(old)
				e.MachineID, e.Power = old.MachineID, old.Power
			}
			s.data.Expected[key] = &e
			s.indexExpected(key, &e)
			s.openExpected(key)
			imported[key] = true
		}
		admitted := 0
		for _, m := range s.data.Machines {
			if m.State == shared.StateRetired || m.Inventory == nil {
				continue
			}
			if key, _ := s.expectedFor(m); !imported[key] {
				continue
			}
			if !m.Admitted() {
				if !s.admitExpected(index, c.Time, m) {
					continue
				}
				admitted++
			} else if !s.applyRow(index, c.Time, m) {
				continue
			}
			s.notifyAfter = append(s.notifyAfter, m.ID)
		}
		s.expectedChanged = true
		return Result{Value: fmt.Sprintf("%d rows imported, %d machines admitted", len(c.Machines), admitted)}, nil
	})
}

// Expected returns the expected machines sorted by key, their BMCs redacted: no reader
// outside the power path (PowerTarget) sees a BMC password, sealed or not.
func (s *Store) Expected() []shared.ExpectedMachine {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]shared.ExpectedMachine, 0, len(s.data.Expected))
	for _, e := range s.data.Expected {
		c := *e
		c.MACs = slices.Clone(e.MACs)
		c.Labels = maps.Clone(e.Labels)
		if e.BMC != nil {
			b := e.BMC.Redacted()
			c.BMC = &b
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

func (s *Store) indexExpected(key string, e *shared.ExpectedMachine) {
	for _, k := range e.MatchKeys() {
		s.expectedBy[k] = key
	}
}

func (s *Store) unindexExpected(e *shared.ExpectedMachine) {
	for _, k := range e.MatchKeys() {
		delete(s.expectedBy, k)
	}
}

// expectedFor finds the row that a machine's MACs, serial or UUID match.
func (s *Store) expectedFor(m *shared.Machine) (string, *shared.ExpectedMachine) {
	for _, k := range shared.ExpectedKeys(m) {
		if key, ok := s.expectedBy[k]; ok {
			return key, s.data.Expected[key]
		}
	}
	return "", nil
}

// admitExpected admits m when it matches an expected row that no other machine holds,
// and gives it the row's labels and host name. A row held by another machine is a
// conflict on that machine's timeline; m stays unadmitted.
func (s *Store) admitExpected(index uint64, now time.Time, m *shared.Machine) bool {
	if !s.applyRow(index, now, m) {
		return false
	}
	key, _ := s.expectedFor(m)
	s.admit(index, now, m, shared.AdmitExpected, key)
	return true
}

// applyRow gives m the labels and host name of the expected row it matches and binds
// the row to it, unless another machine holds the row (a conflict on that machine).
func (s *Store) applyRow(index uint64, now time.Time, m *shared.Machine) bool {
	key, e := s.expectedFor(m)
	if e == nil {
		return false
	}
	if e.MachineID != "" && e.MachineID != m.ID {
		if _, alive := s.data.Machines[e.MachineID]; alive {
			s.conflict(index, now, e.MachineID, fmt.Sprintf(
				"identity conflict: machine %s matched expected machine %s, which machine %s holds; not admitted",
				m.ID, key, e.MachineID))
			return false
		}
	}
	if e.MachineID != m.ID {
		s.takeRowTimeline(key, m.ID)
	}
	e.MachineID = m.ID
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	for k, v := range e.Labels {
		m.Labels[k] = v
	}
	if e.Hostname != "" {
		m.Labels["hostname"] = e.Hostname
	}
	m.StaticAddress = e.Address
	if m.State == shared.StateDiscovered {
		m.Unmatched = "" // new labels: the planner looks at it afresh
	}
	m.UpdatedAt = now
	return true
}

func (s *Store) admit(index uint64, now time.Time, m *shared.Machine, how, by string) {
	m.Admission = &shared.Admission{How: how, By: by, At: now}
	if strings.HasPrefix(m.Unmatched, shared.NotAdmittedPrefix) {
		m.Unmatched = "" // the planner looks at it afresh
	}
	msg := "admitted (" + how
	if by != "" {
		msg += ": " + by
	}
	s.event(index, now, m.ID, shared.EventAdmitted, msg+")")
	m.UpdatedAt = now
}

// approve is the operator's admission of one machine.
func (s *Store) approve(index uint64, c Action, m *shared.Machine) error {
	switch {
	case m.Admitted():
		return fmt.Errorf("it is already admitted (%s)", m.Admission.How)
	case m.State == shared.StateRetired:
		return fmt.Errorf("it is retired; release it first")
	}
	s.event(index, c.Time, m.ID, shared.EventAction, actionText(c))
	s.admit(index, c.Time, m, shared.AdmitApproved, c.By)
	return nil
}

// conflict records a refused identity claim on the owner's timeline. The same claim
// repeated within a minute is recorded once: a hostile peer cannot grow the log of its
// victim faster than the API's rate limits let it register at all.
func (s *Store) conflict(index uint64, now time.Time, owner shared.MachineID, msg string) {
	evs := s.data.Events[owner]
	if n := len(evs); n > 0 {
		last := evs[n-1]
		if last.Kind == shared.EventConflict && last.Message == msg && now.Sub(last.Time) < time.Minute {
			return
		}
	}
	s.event(index, now, owner, shared.EventConflict, msg)
}

// checkCredential applies the identity rules to a registration. It returns the refusal
// (and records a conflict on the owner's timeline) or nil.
func (s *Store) checkCredential(index uint64, c *Register, macs []string, res *Result) (ticketMAC string, _ error) {
	m, exists := s.data.Machines[c.ID]
	claimant := describeClaim(c, macs)
	if c.Credential == CredTicket {
		t, ok := s.data.Tickets[c.TicketHash]
		if ok {
			delete(s.data.Tickets, c.TicketHash) // spent, whatever happens next
		}
		if !ok || !t.Expires.After(c.Time) {
			return ticketMAC, reject(KindUnauthorized, RuleTicket, string(c.ID), "the boot ticket is unknown, spent or expired")
		}
		if !slices.Contains(macs, t.MAC) {
			return ticketMAC, reject(KindForbidden, RuleTicketMAC, string(c.ID),
				"the boot ticket was issued for MAC %s, which is not one of this machine's NICs", t.MAC)
		}
		ticketMAC = t.MAC
	}
	if exists {
		if m.State == shared.StateRetired {
			return ticketMAC, reject(KindForbidden, RuleRetired, string(c.ID), "machine %s is retired", c.ID)
		}
		if why := s.mayClaim(c, m, ticketMAC); why != "" {
			res.Touched = c.ID
			s.conflict(index, c.Time, c.ID, fmt.Sprintf("identity conflict: %s claimed this machine's id (%s); refused", claimant, why))
			return ticketMAC, reject(KindIdentity, RuleIdentityID, string(c.ID),
				"machine %s already exists and this registration does not prove it is that machine (%s)", c.ID, why)
		}
	}
	for _, mac := range macs {
		owner, taken := s.byMAC[mac]
		if !taken || owner == c.ID {
			continue
		}
		res.Touched = owner
		s.conflict(index, c.Time, owner, fmt.Sprintf("identity conflict: %s as machine %s claimed this machine's MAC %s; refused",
			claimant, c.ID, mac))
		return ticketMAC, reject(KindIdentity, RuleIdentityMAC, string(owner),
			"MAC %s belongs to machine %s", mac, owner)
	}
	if !exists && c.MaxMachines > 0 && len(s.data.Machines) >= c.MaxMachines {
		return ticketMAC, reject(KindLimit, RuleMaxMachines, string(c.ID),
			"the cluster holds %d machines, its limit (--max-machines %d)", len(s.data.Machines), c.MaxMachines)
	}
	return ticketMAC, nil
}

// isRetry: the registration repeats the machine's last accepted one (same attempt value,
// which only the agent that made it knows), so it is answered again, token unrotated.
func (s *Store) isRetry(c *Register) bool {
	if c.AttemptHash == "" {
		return false
	}
	_, exists := s.data.Machines[c.ID]
	return exists && s.data.Attempts[c.ID] == c.AttemptHash
}

// mayClaim says why credential c may not speak for existing machine m, or "". ticketMAC
// is the MAC a spent boot ticket vouched for.
func (s *Store) mayClaim(c *Register, m *shared.Machine, ticketMAC string) string {
	switch c.Credential {
	case CredMachine:
		if c.TokenGen != s.data.TokenGens[m.ID] {
			return "a machine token of an earlier registration"
		}
		return ""
	case CredTicket:
		// The coordinator itself expects this machine to network-boot, and the ticket's
		// MAC is one this machine registered before.
		if m.Boot != shared.BootAgent && m.Boot != "" {
			return "a boot ticket, but the machine's boot target is " + string(m.Boot) + ", not the agent"
		}
		if !slices.Contains(m.MACs, ticketMAC) {
			return "a boot ticket for MAC " + ticketMAC + ", which is not one of the machine's MACs"
		}
		return ""
	}
	return "an enrolment token without the machine's own token"
}

func describeClaim(c *Register, macs []string) string {
	d := "a registration with " + c.Credential
	if c.Credential == CredTicket || c.Credential == CredEnrol {
		d += " credentials"
	} else {
		d += " token"
	}
	if len(macs) > 0 {
		d += " from MAC " + strings.Join(macs, ",")
	}
	if c.From != "" {
		d += " at " + c.From
	}
	return d
}

// reindexMACs makes macs the machine's MACs for the boot services: ones it no longer has
// stop pointing at it.
func (s *Store) reindexMACs(m *shared.Machine, macs []string) {
	for _, old := range m.MACs {
		if !slices.Contains(macs, old) && s.byMAC[old] == m.ID {
			delete(s.byMAC, old)
		}
	}
	m.MACs = macs
	s.indexMACs(m.ID, macs)
}

// canonicalMAC is the form byMAC and expected rows use.
func canonicalMAC(mac string) string {
	if hw, err := net.ParseMAC(mac); err == nil {
		return hw.String()
	}
	return strings.ToLower(mac)
}
