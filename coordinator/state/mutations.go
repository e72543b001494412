package state

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"

	"github.com/rivetmetal/rivet/shared"
)

// The Apply* methods are called by the FSM only, in log order. index is the Raft index
// of the command; it orders timeline events. None of them reads a clock.

// ApplyInitCluster stores the cluster secrets the first time; later calls change nothing.
func (s *Store) ApplyInitCluster(c InitCluster, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		if s.data.Cluster.Initialised() {
			return Result{Value: "already initialised"}, nil
		}
		s.data.Cluster = c.Cluster
		s.openSecrets()
		for _, t := range []Token{c.AdminToken, c.EnrolToken} {
			tok := t
			s.data.Tokens[t.ID] = &tok
		}
		return Result{Value: "initialised"}, nil
	})
}

// ApplyPutCoordinator records a coordinator's addresses.
func (s *Store) ApplyPutCoordinator(c PutCoordinator, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		s.data.Coordinators[c.Coordinator.ID] = c.Coordinator
		return Result{}, nil
	})
}

// ApplyRemoveCoordinator forgets a coordinator.
func (s *Store) ApplyRemoveCoordinator(c RemoveCoordinator, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		delete(s.data.Coordinators, c.ID)
		return Result{}, nil
	})
}

// ApplyRegister creates a machine in state discovered, or refreshes an existing one.
// Registering again never duplicates and never moves a machine backwards. The identity
// rules (admission.go) decide first whether the credential may speak for this id and
// these MACs; a refusal changes nothing but the owner's timeline. An accepted
// registration rotates the machine's token, so an earlier boot's token stops working.
func (s *Store) ApplyRegister(c Register, index uint64) (Result, error) {
	return s.mutate(index, c.ID, func() (Result, error) {
		macs := physicalMACs(&c.Inventory)
		legacy := c.Credential == "" // written before admission existed: its old meaning
		var res Result
		if !legacy && s.isRetry(&c) {
			m := s.data.Machines[c.ID]
			res = summaryOf(m)
			res.TokenGen = s.data.TokenGens[c.ID]
			return res, nil
		}
		var bootMAC string
		if !legacy {
			var err error
			if bootMAC, err = s.checkCredential(index, &c, macs, &res); err != nil {
				return res, err
			}
		}
		m, exists := s.data.Machines[c.ID]
		if !exists {
			m = &shared.Machine{ID: c.ID, State: shared.StateDiscovered, Boot: shared.BootAgent,
				CreatedAt: c.Time, Labels: map[string]string{}}
			s.data.Machines[c.ID] = m
			s.event(index, c.Time, c.ID, shared.EventRegistered,
				fmt.Sprintf("registered (%s mode, id from %s)", c.Mode, c.Basis))
		} else {
			s.event(index, c.Time, c.ID, shared.EventRegistered, fmt.Sprintf("registered again (%s mode)", c.Mode))
		}
		inv := c.Inventory
		m.Basis, m.Inventory, m.Hostname = c.Basis, &inv, inv.System.Hostname
		m.Unmatched = "" // new inventory and labels: the planner looks at the machine again
		m.BootMAC = bootMAC
		s.reindexMACs(m, macs)
		if legacy {
			mergeLabels(&m.Labels, c.Labels)
		} else {
			m.Facts = maps.Clone(c.Labels)
		}
		m.Agent = shared.AgentInfo{Version: c.Version, Mode: c.Mode, LastSeen: c.Time}
		if c.Addr != "" {
			m.Addr = c.Addr
		}
		s.returnIfLost(index, c.Time, m, "agent registered")
		m.UpdatedAt = c.Time
		s.admitOnRegister(index, &c, m, legacy)
		if !legacy {
			s.data.TokenGens[c.ID]++
			if c.AttemptHash != "" {
				s.data.Attempts[c.ID] = c.AttemptHash
			}
		}
		res = summaryOf(m)
		res.TokenGen = s.data.TokenGens[c.ID]
		return res, nil
	})
}

// admitOnRegister admits a machine that is not yet admitted when operator intent says
// so: it matches an expected row, or the coordinator admits every machine. Until then
// it is a record with a visible reason and nothing more.
func (s *Store) admitOnRegister(index uint64, c *Register, m *shared.Machine, legacy bool) {
	switch {
	case m.Admitted():
	case s.admitExpected(index, c.Time, m):
	case legacy:
		m.Admission = &shared.Admission{How: shared.AdmitAuto, By: "registered before admission existed", At: c.Time}
	case c.AdmitAuto:
		s.admit(index, c.Time, m, shared.AdmitAuto, "")
	case m.State == shared.StateDiscovered:
		m.Unmatched = shared.NotAdmitted(m.ID)
	}
}

func mergeLabels(dst *map[string]string, src map[string]string) {
	for k, v := range src {
		if *dst == nil {
			*dst = map[string]string{}
		}
		(*dst)[k] = v
	}
}

func physicalMACs(inv *shared.Inventory) []string {
	var macs []string
	for _, n := range inv.PhysicalNICs() {
		macs = append(macs, canonicalMAC(n.MAC))
	}
	sort.Strings(macs)
	return slices.Compact(macs)
}

// ApplyCheckin records the agent's mode and version. A service-mode check-in from a
// machine whose boot target is the disk is its first disk boot: it is now installed.
func (s *Store) ApplyCheckin(c Checkin, index uint64) (Result, error) {
	return s.mutate(index, c.ID, func() (Result, error) {
		m, ok := s.data.Machines[c.ID]
		if !ok {
			return Result{}, notFound(c.ID)
		}
		m.Agent = shared.AgentInfo{Version: c.Version, Mode: c.Mode, LastSeen: c.Time}
		if c.Addr != "" {
			m.Addr = c.Addr
		}
		s.returnIfLost(index, c.Time, m, "agent checked in")
		if c.Mode == shared.ModeService && m.Boot == shared.BootDisk &&
			(m.State == shared.StateProvisioning || m.State == shared.StatePlanned) {
			s.setState(index, c.Time, m, shared.StateInstalled, "first boot from disk checked in")
			if h := handoffHostname(m.Plan); h != "" {
				m.Hostname = h // the installed OS's name, not the RAM agent's (which has none)
			}
			s.finishIfDone(index, c.Time, m)
		}
		m.UpdatedAt = c.Time
		return summaryOf(m), nil
	})
}

// handoffHostname is the host name the plan's handoff step gave the installed OS, if any.
func handoffHostname(p *shared.Plan) string {
	if p == nil {
		return ""
	}
	for _, st := range p.Steps {
		if st.Kind == shared.StepHandoff && st.Handoff != nil {
			return st.Handoff.Hostname
		}
	}
	return ""
}

// ApplySetPlan stores the planner's verdict for a discovered machine.
func (s *Store) ApplySetPlan(c SetPlan, index uint64) (Result, error) {
	return s.mutate(index, c.ID, func() (Result, error) {
		m, ok := s.data.Machines[c.ID]
		if !ok {
			return Result{}, notFound(c.ID)
		}
		if m.State != shared.StateDiscovered {
			return Result{}, reject(KindConflict, RulePlanOnlyDiscovered, string(c.ID),
				"machine %s is %s, only discovered machines are planned", c.ID, m.State)
		}
		if c.Plan != nil && !m.Admitted() {
			return Result{}, reject(KindForbidden, RulePlanNotAdmitted, string(c.ID),
				"machine %s is not admitted; it gets no plan", c.ID)
		}
		if c.Plan == nil {
			if m.Unmatched != c.Unmatched {
				m.Unmatched = c.Unmatched
				s.event(index, c.Time, c.ID, shared.EventPlan, "not planned: "+c.Unmatched)
				m.UpdatedAt = c.Time
			}
			return Result{Machine: clone(m)}, nil
		}
		s.designateInitiator(index, c.Time, m.ID, c.Plan)
		m.Role, m.Plan, m.Unmatched = c.Role, c.Plan, ""
		m.Steps = make([]shared.StepState, len(c.Plan.Steps))
		for i, st := range c.Plan.Steps {
			m.Steps[i] = shared.StepState{Name: st.Name, Status: shared.StepPending}
		}
		m.LastError = nil
		s.event(index, c.Time, c.ID, shared.EventPlan,
			fmt.Sprintf("planned: role %s, generation %d, %d steps", c.Role, c.Plan.Generation, len(c.Plan.Steps)))
		s.setState(index, c.Time, m, shared.StatePlanned, "matched role "+c.Role)
		if !hasPhase(c.Plan, shared.PhaseRAM) {
			// Nothing to install: the host already runs its OS (the agent under systemd).
			m.Boot = shared.BootDisk
			s.setState(index, c.Time, m, shared.StateInstalled, "role installs nothing: the host keeps its OS")
			s.finishIfDone(index, c.Time, m)
		}
		m.UpdatedAt = c.Time
		return Result{Machine: clone(m)}, nil
	})
}

// ApplySetPlans applies a batch of verdicts; each succeeds or fails on its own. The
// result's Value counts the plans applied.
func (s *Store) ApplySetPlans(c SetPlans, index uint64) (Result, error) {
	applied := 0
	for _, p := range c.Plans {
		if _, err := s.ApplySetPlan(p, index); err == nil && p.Plan != nil {
			applied++
		}
	}
	return Result{Value: fmt.Sprint(applied)}, nil
}

// ApplyReport records a step's progress or result and moves the machine along.
func (s *Store) ApplyReport(c Report, index uint64) (Result, error) {
	return s.mutate(index, c.ID, func() (Result, error) {
		m, ok := s.data.Machines[c.ID]
		if !ok {
			return Result{}, notFound(c.ID)
		}
		r := c.Report
		if m.Plan == nil || m.Plan.Generation != r.Generation {
			return Result{}, reject(KindConflict, RuleReportGeneration, string(c.ID),
				"report for plan generation %d, but the machine's plan is %s", r.Generation, planGen(m))
		}
		idx := stepIndex(m.Plan, r.Step)
		if idx < 0 {
			return Result{}, reject(KindInvalid, RuleReportStep, string(c.ID), "plan has no step %q", r.Step)
		}
		if m.State == shared.StateRetired || m.State == shared.StateFailed && r.Status == shared.StepRunning && m.Steps[idx].Status == shared.StepFailed {
			return Result{}, reject(KindConflict, RuleReportFinished, string(c.ID),
				"machine %s is %s", c.ID, m.State)
		}
		s.returnIfLost(index, c.Time, m, "agent reported")
		st := &m.Steps[idx]
		s.recordStep(index, c.Time, m, st, m.Plan.Steps[idx], r)
		m.UpdatedAt = c.Time
		return summaryOf(m), nil
	})
}

func (s *Store) recordStep(index uint64, now timeT, m *shared.Machine, st *shared.StepState, step shared.Step, r shared.StepReport) {
	switch r.Status {
	case shared.StepRunning:
		if (st.Status == shared.StepSucceeded || st.Status == shared.StepSkipped) && r.Attempt <= st.Attempt {
			// A late progress report of an attempt that has finished: progress is sent once
			// and unordered (a follower may forward it after the result), so it must not
			// turn a finished step back into a running one.
			return
		}
		if st.Status != shared.StepRunning || st.Attempt != r.Attempt {
			st.StartedAt = now
			s.event(index, now, m.ID, shared.EventStep, fmt.Sprintf("step %s running (attempt %d)", st.Name, max(r.Attempt, 1)))
		}
		st.Status, st.Attempt, st.Progress, st.Error = shared.StepRunning, r.Attempt, r.Progress, ""
		switch {
		case step.Phase == shared.PhaseRAM && m.State == shared.StatePlanned:
			s.setState(index, now, m, shared.StateProvisioning, "first step started")
		case step.Phase == shared.PhaseDisk && m.State == shared.StateInstalled:
			s.setState(index, now, m, shared.StateJoining, "disk-phase steps started")
		}
	case shared.StepSucceeded, shared.StepSkipped:
		st.Status, st.Progress, st.Error, st.FinishedAt = r.Status, r.Progress, "", now
		st.Attempt = max(st.Attempt, r.Attempt)
		s.event(index, now, m.ID, shared.EventStep, fmt.Sprintf("step %s %s", st.Name, r.Status))
		if step.Kind == shared.StepBootCfg && step.BootCfg != nil {
			m.Boot = step.BootCfg.Boot
		}
		s.finishIfDone(index, now, m)
	case shared.StepFailed:
		st.Status, st.Error, st.FinishedAt = shared.StepFailed, r.Error, now
		m.LastError = &shared.MachineError{Step: st.Name, Message: r.Error, Hint: r.Hint, At: now}
		s.event(index, now, m.ID, shared.EventStep, fmt.Sprintf("step %s failed: %s", st.Name, r.Error))
		s.setState(index, now, m, shared.StateFailed, "step "+st.Name+" failed")
	}
}

// finishIfDone moves an installed or joining machine to ready once every step is done.
func (s *Store) finishIfDone(index uint64, now timeT, m *shared.Machine) {
	if m.State != shared.StateInstalled && m.State != shared.StateJoining {
		return
	}
	for _, st := range m.Steps {
		if st.Status != shared.StepSucceeded && st.Status != shared.StepSkipped {
			return
		}
	}
	if m.State == shared.StateInstalled {
		s.setState(index, now, m, shared.StateJoining, "no disk-phase steps left")
	}
	s.setState(index, now, m, shared.StateReady, "all steps done")
	s.reinstalled(index, now, m)
}

// ApplySetBoot records the next network-boot answer.
func (s *Store) ApplySetBoot(c SetBoot, index uint64) (Result, error) {
	return s.mutate(index, c.ID, func() (Result, error) {
		m, ok := s.data.Machines[c.ID]
		if !ok {
			return Result{}, notFound(c.ID)
		}
		if m.Boot != c.Boot {
			m.Boot = c.Boot
			s.event(index, c.Time, c.ID, shared.EventState, "next network boot: "+string(c.Boot))
			m.UpdatedAt = c.Time
		}
		return Result{Machine: clone(m)}, nil
	})
}

// ApplyGossip marks a machine lost when gossip says it failed, and returns it to the
// state it was in when gossip sees it again. Lost is a hint, never a reason to re-plan.
func (s *Store) ApplyGossip(c Gossip, index uint64) (Result, error) {
	return s.mutate(index, c.ID, func() (Result, error) {
		m, ok := s.data.Machines[c.ID]
		if !ok {
			return Result{}, notFound(c.ID)
		}
		switch {
		case c.Alive:
			s.returnIfLost(index, c.Time, m, "gossip: alive again")
		case m.State != shared.StateLost && m.State != shared.StateRetired:
			m.LostFrom = m.State
			s.setState(index, c.Time, m, shared.StateLost, "gossip: "+c.Reason)
		}
		m.UpdatedAt = c.Time
		return Result{Machine: clone(m)}, nil
	})
}

func (s *Store) returnIfLost(index uint64, now timeT, m *shared.Machine, why string) {
	if m.State != shared.StateLost {
		return
	}
	back := m.LostFrom
	if back == "" {
		back = shared.StateDiscovered
	}
	m.LostFrom = ""
	m.State = back
	s.event(index, now, m.ID, shared.EventGossip, fmt.Sprintf("back from lost to %s: %s", back, why))
}

// ApplyAction carries out an operator action: retry, replan, release or retire.
func (s *Store) ApplyAction(c Action, index uint64) (Result, error) {
	return s.mutate(index, c.ID, func() (Result, error) {
		m, ok := s.data.Machines[c.ID]
		if !ok {
			return Result{}, notFound(c.ID)
		}
		var err error
		switch c.Action {
		case shared.ActionRetry:
			err = s.retry(index, c, m)
		case shared.ActionReplan:
			err = s.replan(index, c, m)
		case shared.ActionRelease:
			err = s.transition(index, c, m, shared.StateDiscovered)
			if err == nil {
				m.Boot, m.Plan, m.Steps, m.Role, m.LastError, m.Unmatched = shared.BootAgent, nil, nil, "", nil, ""
			}
		case shared.ActionApprove:
			err = s.approve(index, c, m)
		case shared.ActionRetire:
			err = s.transition(index, c, m, shared.StateRetired)
			if err == nil {
				m.Boot, m.LostFrom = shared.BootNone, ""
				s.data.TokenGens[c.ID]++ // revokes the machine token
			}
		default:
			err = fmt.Errorf("unknown action %q: want retry, replan, release, retire or approve", c.Action)
		}
		if err != nil {
			return Result{}, reject(KindConflict, RuleAction, string(c.ID), "%s %s: %v", c.Action, c.ID, err)
		}
		if m.Reprovision != nil && c.Action != shared.ActionRetry && c.Action != shared.ActionApprove {
			m.Reprovision = nil // the operator's action overrides it
			s.event(index, c.Time, c.ID, shared.EventAction, "re-provisioning abandoned: "+string(c.Action))
		}
		m.UpdatedAt = c.Time
		return Result{Machine: clone(m)}, nil
	})
}

func (s *Store) transition(index uint64, c Action, m *shared.Machine, to shared.State) error {
	if err := shared.CanTransition(m.State, to, m.LostFrom); err != nil {
		return err
	}
	s.event(index, c.Time, m.ID, shared.EventAction, actionText(c))
	s.setState(index, c.Time, m, to, string(c.Action))
	return nil
}

func (s *Store) retry(index uint64, c Action, m *shared.Machine) error {
	if m.State != shared.StateFailed || m.Plan == nil {
		return fmt.Errorf("only a failed machine with a plan can be retried (it is %s)", m.State)
	}
	to := shared.StatePlanned
	for i, st := range m.Steps {
		if st.Status == shared.StepFailed {
			m.Steps[i].Status, m.Steps[i].Error = shared.StepPending, ""
			if m.Plan.Steps[i].Phase == shared.PhaseDisk {
				to = shared.StateInstalled
			}
		}
	}
	m.LastError = nil
	return s.transition(index, c, m, to)
}

func (s *Store) replan(index uint64, c Action, m *shared.Machine) error {
	switch m.State {
	case shared.StateRetired, shared.StateLost:
		return fmt.Errorf("a %s machine cannot be re-planned", m.State)
	}
	s.event(index, c.Time, m.ID, shared.EventAction, actionText(c))
	if m.State != shared.StateDiscovered {
		s.setState(index, c.Time, m, shared.StateDiscovered, "re-plan")
	}
	m.Plan, m.Steps, m.Role, m.LastError, m.Unmatched = nil, nil, "", nil, ""
	m.Boot = shared.BootAgent
	return nil
}

func actionText(c Action) string {
	t := "operator action " + string(c.Action)
	if c.By != "" {
		t += " by " + c.By
	}
	if c.Reason != "" {
		t += ": " + c.Reason
	}
	return t
}

// ApplyPutRole creates or replaces a role.
func (s *Store) ApplyPutRole(c PutRole, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		r := c.Role
		_, existed := s.data.Roles[r.Name]
		s.data.Roles[r.Name] = &r
		s.forgetStaleReasons()
		if existed {
			return Result{Value: "updated"}, nil
		}
		return Result{Value: "created"}, nil
	})
}

// ApplyDeleteRole removes a role; machines already planned keep their plans.
func (s *Store) ApplyDeleteRole(c DeleteRole, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		if _, ok := s.data.Roles[c.Name]; !ok {
			return Result{}, reject(KindNotFound, RuleRoleUnknown, c.Name, "role %s not found", c.Name)
		}
		delete(s.data.Roles, c.Name)
		s.forgetStaleReasons()
		return Result{}, nil
	})
}

// forgetStaleReasons drops the reason no role matched from machines the planner does not
// look at now (lost or retired ones): it was about the roles before this change. Back in
// discovered they are planned afresh. Discovered machines keep theirs until the planner's
// next pass, which a role change starts, replaces it.
func (s *Store) forgetStaleReasons() {
	for _, m := range s.data.Machines {
		if m.State != shared.StateDiscovered {
			m.Unmatched = ""
		}
	}
}

// ApplyPutToken stores a new token.
func (s *Store) ApplyPutToken(c PutToken, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		for _, t := range s.data.Tokens {
			if t.Name == c.Token.Name {
				return Result{}, reject(KindConflict, RuleTokenNameTaken, c.Token.Name,
					"a token named %s exists", c.Token.Name)
			}
		}
		t := c.Token
		s.data.Tokens[t.ID] = &t
		return Result{}, nil
	})
}

// ApplyDeleteToken revokes a token.
func (s *Store) ApplyDeleteToken(c DeleteToken, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		if _, ok := s.data.Tokens[c.ID]; !ok {
			return Result{}, reject(KindNotFound, RuleTokenUnknown, c.ID, "token %s not found", c.ID)
		}
		delete(s.data.Tokens, c.ID)
		return Result{}, nil
	})
}

// ApplyEndSessions raises a token's session generation past c.Gen. The result's Value
// is the generation now current.
func (s *Store) ApplyEndSessions(c EndSessions, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		t, ok := s.data.Tokens[c.TokenID]
		if !ok {
			return Result{}, reject(KindNotFound, RuleTokenUnknown, c.TokenID, "token %s not found", c.TokenID)
		}
		if t.SessionGen <= c.Gen {
			next := *t // token records are replaced whole, never changed in place (see frozen)
			next.SessionGen = c.Gen + 1
			s.data.Tokens[c.TokenID] = &next
			t = &next
		}
		return Result{Value: strconv.FormatUint(t.SessionGen, 10)}, nil
	})
}

func planGen(m *shared.Machine) string {
	if m.Plan == nil {
		return "not set"
	}
	return fmt.Sprintf("generation %d", m.Plan.Generation)
}

func hasPhase(p *shared.Plan, phase shared.Phase) bool {
	for _, st := range p.Steps {
		if st.Phase == phase {
			return true
		}
	}
	return false
}

func stepIndex(p *shared.Plan, name string) int {
	for i, st := range p.Steps {
		if st.Name == name {
			return i
		}
	}
	return -1
}
