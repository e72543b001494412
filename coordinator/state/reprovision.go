package state

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// Re-provisioning (shared/reprovision.go): an operator's Reprovision starts it; the
// leader's swarm keeper starts the swarm operation each phase needs, and each operation's
// success moves the machine to the next phase, here, in log order. A failed operation
// leaves the phase as it was: the keeper tries again, and the timeline says why.

func (Reprovision) command() {}

// Reprovision asks for a ready machine in the swarm to be re-provisioned (protocol 2).
type Reprovision struct {
	ID    shared.MachineID  `json:"id"`
	Image *shared.ImageSpec `json:"image,omitempty"`
	// NoStandIn: a manager leaves without a promoted stand-in (--allow-fewer-managers).
	NoStandIn bool                  `json:"no_stand_in,omitempty"`
	Via       shared.ReprovisionVia `json:"via,omitempty"`
	Reason    string                `json:"reason,omitempty"`
	By        string                `json:"by,omitempty"` // the operator token's name
	Time      time.Time             `json:"time"`
}

// RuleReprovision: the machine cannot be re-provisioned now.
const RuleReprovision Rule = "reprovision"

// ApplyReprovision starts a re-provisioning: the machine must be ready and in the swarm,
// with a ready manager other than itself to run its swarm operations.
func (s *Store) ApplyReprovision(c Reprovision, index uint64) (Result, error) {
	return s.mutate(index, c.ID, func() (Result, error) {
		m, ok := s.data.Machines[c.ID]
		if !ok {
			return Result{}, notFound(c.ID)
		}
		refuse := func(format string, args ...any) (Result, error) {
			return Result{}, reject(KindConflict, RuleReprovision, string(c.ID), "re-provision %s: "+format,
				append([]any{c.ID}, args...)...)
		}
		switch {
		case m.Reprovision != nil:
			return refuse("it is being re-provisioned already (phase %s since %s)", m.Reprovision.Phase,
				m.Reprovision.PhaseAt.Format(time.RFC3339))
		case m.State != shared.StateReady:
			return refuse("it is %s; only a ready machine is re-provisioned (a failed one is retried or re-planned)", m.State)
		case m.SwarmNodeID == "":
			return refuse("it is not in the swarm; re-plan it instead")
		case !s.hasOtherReadyManager(c.ID):
			return refuse("no other ready manager could run its swarm operations")
		case !c.Via.Valid():
			return refuse("via %q: want kexec or bmc", c.Via)
		case c.Via == shared.ViaBMC && !s.hasBMC(m.ID):
			return refuse("it has no BMC to power-cycle it with")
		}
		m.Reprovision = &shared.Reprovision{Phase: shared.ReprovisionDrain, Image: c.Image, By: c.By,
			Reason: c.Reason, Started: c.Time, PhaseAt: c.Time, Manager: s.liveManagers()[m.ID] != "", NoStandIn: c.NoStandIn, Via: c.Via}
		text := "re-provisioning started"
		if c.By != "" {
			text += " by " + c.By
		}
		if c.Reason != "" {
			text += ": " + c.Reason
		}
		if c.Image != nil {
			text += " (image " + c.Image.URL + ")"
		}
		s.event(index, c.Time, c.ID, shared.EventAction, text)
		m.UpdatedAt = c.Time
		return Result{Machine: clone(m)}, nil
	})
}

func (s *Store) hasOtherReadyManager(id shared.MachineID) bool {
	for mid := range s.liveManagers() {
		if m := s.data.Machines[mid]; mid != id && m.State == shared.StateReady {
			return true
		}
	}
	return false
}

// reprovisionPhase moves m's re-provisioning to phase, on the timeline; also, when not
// nil, changes what else the phase learnt.
func (s *Store) reprovisionPhase(index uint64, now time.Time, m *shared.Machine, phase shared.ReprovisionPhase, why string,
	also func(*shared.Reprovision)) {
	r := *m.Reprovision // readers hold the old record
	r.Phase, r.PhaseAt = phase, now
	if also != nil {
		also(&r)
	}
	m.Reprovision, m.UpdatedAt = &r, now
	s.event(index, now, m.ID, shared.EventAction, fmt.Sprintf("re-provisioning: %s (%s)", phase, why))
}

// reprovisioning returns m when it is being re-provisioned in phase.
func (s *Store) reprovisioning(id shared.MachineID, phase shared.ReprovisionPhase) (*shared.Machine, bool) {
	m, ok := s.data.Machines[id]
	return m, ok && m.Reprovision != nil && m.Reprovision.Phase == phase
}

// drained moves a drained machine on: a manager to be replaced, a worker to leave.
func (s *Store) drained(index uint64, now time.Time, op shared.SwarmOp, detail string) {
	m, ok := s.reprovisioning(op.Target, shared.ReprovisionDrain)
	if !ok {
		return
	}
	if s.liveManagers()[m.ID] != "" && !m.Reprovision.NoStandIn {
		s.reprovisionPhase(index, now, m, shared.ReprovisionReplace, "drained: "+detail+"; a worker is promoted in its place first", nil)
		return
	}
	if m.Reprovision.NoStandIn {
		detail += "; no stand-in (allowed by the operator): the swarm has one manager fewer until it is back"
	}
	s.reprovisionPhase(index, now, m, shared.ReprovisionLeave, "drained: "+detail, nil)
}

// replaced moves a re-provisioned manager whose stand-in was promoted on to leave.
func (s *Store) replaced(index uint64, now time.Time, op shared.SwarmOp) {
	if m, ok := s.reprovisioning(op.For, shared.ReprovisionReplace); ok {
		s.reprovisionPhase(index, now, m, shared.ReprovisionLeave, string(op.Target)+" promoted in its place",
			func(r *shared.Reprovision) { r.StandIn = op.Target })
	}
}

// left plans a machine removed from the swarm again: it runs its role's plan (with the
// operator's image) and joins as a new node.
func (s *Store) left(index uint64, now time.Time, op shared.SwarmOp) {
	m, ok := s.reprovisioning(op.Target, shared.ReprovisionLeave)
	if !ok {
		return
	}
	s.reprovisionPhase(index, now, m, shared.ReprovisionReinstall, "removed from the swarm; planned again",
		func(r *shared.Reprovision) { r.LeftNode = op.NodeID })
	s.setState(index, now, m, shared.StateDiscovered, "re-provisioning")
	m.Plan, m.Steps, m.Role, m.LastError, m.Unmatched = nil, nil, "", nil, ""
	m.Boot = shared.BootAgent
}

// reinstalled moves a re-provisioning on when its machine is ready again: a manager back
// has its stand-in demoted first; anything else is done.
func (s *Store) reinstalled(index uint64, now time.Time, m *shared.Machine) {
	if m.Reprovision == nil || m.Reprovision.Phase != shared.ReprovisionReinstall || m.State != shared.StateReady {
		return
	}
	if standIn, ok := s.data.Machines[m.Reprovision.StandIn]; ok && s.liveManagers()[standIn.ID] != "" {
		s.reprovisionPhase(index, now, m, shared.ReprovisionRestore, "a manager again; its stand-in "+string(standIn.ID)+" is demoted", nil)
		return
	}
	s.reprovisioned(index, now, m)
}

// restored demotes a re-provisioned manager's stand-in in the state (its plan says worker
// again) and ends the re-provisioning.
func (s *Store) restored(index uint64, now time.Time, op shared.SwarmOp) {
	m, ok := s.reprovisioning(op.For, shared.ReprovisionRestore)
	if !ok || m.Reprovision.StandIn != op.Target {
		return
	}
	if w, ok := s.data.Machines[op.Target]; ok && w.Plan != nil {
		w.Plan, w.UpdatedAt = withSwarmRole(w.Plan, shared.SwarmWorker), now
	}
	sw := &s.data.Swarm
	delete(sw.Managers, op.Target)
	sw.ManagerAddrs = slices.Sorted(maps.Values(sw.Managers))
	s.event(index, now, op.Target, shared.EventSwarm, fmt.Sprintf("swarm: %s demoted this node: %s is a manager again", op.Runner, op.For))
	s.reprovisioned(index, now, m)
}

func (s *Store) reprovisioned(index uint64, now time.Time, m *shared.Machine) {
	took := now.Sub(m.Reprovision.Started).Round(time.Second)
	m.Reprovision, m.UpdatedAt = nil, now
	s.event(index, now, m.ID, shared.EventAction, fmt.Sprintf("re-provisioned in %s", took))
}

// Reprovisioning is one machine's re-provisioning, for the leader's swarm keeper.
type Reprovisioning struct {
	ID      shared.MachineID
	NodeID  string
	Phase   shared.ReprovisionPhase
	StandIn shared.MachineID // the promoted worker of a manager's re-provisioning
}

// needsCycle reports whether m, re-imaged through its BMC, is planned again and waits
// for the power cycle with PXE once: no power command switched it on since the phase
// began (a cycle records BootAt in the log, so a new leader does not cycle it twice).
func needsCycle(m *shared.Machine) bool {
	return awaitsAgent(m) && m.Reprovision.Via == shared.ViaBMC && !m.Power.BootAt.After(m.Reprovision.PhaseAt)
}

// awaitsAgent reports whether m is re-provisioned, planned again with an image to write,
// and waits to boot the RAM agent for it.
func awaitsAgent(m *shared.Machine) bool {
	return m.Reprovision != nil && m.Reprovision.Phase == shared.ReprovisionReinstall && m.State == shared.StatePlanned &&
		m.Boot == shared.BootAgent && hasPhase(m.Plan, shared.PhaseRAM)
}

// Reprovisionings returns the re-provisionings whose phase needs the leader: a swarm
// operation, or the power cycle of one re-imaged through its BMC.
func (s *Store) Reprovisionings() []Reprovisioning {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Reprovisioning
	for id, m := range s.data.Machines {
		if r := m.Reprovision; r != nil && (r.Phase != shared.ReprovisionReinstall || needsCycle(m)) {
			out = append(out, Reprovisioning{ID: id, NodeID: m.SwarmNodeID, Phase: r.Phase, StandIn: r.StandIn})
		}
	}
	slices.SortFunc(out, func(a, b Reprovisioning) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// KexecMAC returns the MAC a re-imaged machine's RAM agent boots from, when its
// installed agent may kexec into it: it is being re-provisioned, planned again with an
// image to write, and its next boot is the agent's.
func (s *Store) KexecMAC(id shared.MachineID) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.data.Machines[id]
	switch {
	case !ok:
		return "", notFound(id)
	case !awaitsAgent(m):
		return "", reject(KindConflict, RuleReprovision, string(id),
			"machine %s is not waiting to boot the Rivet agent for a new image (it is %s)", id, m.State)
	case m.BootMAC != "":
		return m.BootMAC, nil
	case len(m.MACs) > 0:
		return m.MACs[0], nil
	}
	return "", reject(KindConflict, RuleReprovision, string(id), "machine %s has no known MAC to boot from", id)
}

// hasBMC reports whether machine id's expected row names a BMC (its password stays
// sealed). The caller holds s.mu.
func (s *Store) hasBMC(id shared.MachineID) bool {
	_, row := s.rowOf(id)
	return row != nil && row.BMC != nil && row.BMC.Driver != ""
}
