package state

import (
	"fmt"
	"maps"
	"net"
	"slices"

	"github.com/rivetmetal/rivet/shared"
)

// Swarm is the one Docker Swarm of this site. The tokens are secrets.
//
// Who may do what (every rule is checked here, on every coordinator, in log order):
//   - Only InitBy creates the swarm. The planner designates it (its plan's swarm step says
//     init) and SetPlan records it; a machine asking first gains nothing.
//   - A join token goes only to a machine whose swarm step is due (see SwarmDue), once per
//     attempt of that step (Issued); the manager token only to a planned manager.
//   - A swarm report is taken only while the step is due. The cluster id and tokens of
//     a new swarm only from InitBy; a manager address only from a planned manager, only
//     its own recorded address on the Swarm port, at most shared.MaxSwarmManagers.
//   - Once every planned manager has joined with a manager token that was handed out,
//     the manager that completes the set is told to rotate it (RotateBy); only that
//     manager's rotation report replaces ManagerToken.
type Swarm struct {
	InitBy       shared.MachineID `json:"init_by,omitempty"` // the manager that creates the swarm
	ClusterID    string           `json:"cluster_id,omitempty"`
	ManagerToken string           `json:"manager_token,omitempty"`
	WorkerToken  string           `json:"worker_token,omitempty"`
	// ManagerAddrs are the managers' host:port, sorted: Managers' values.
	ManagerAddrs []string `json:"manager_addrs,omitempty"`
	// Managers is each manager's reported address.
	Managers map[shared.MachineID]string `json:"managers,omitempty"`
	// Issued is, per machine, the swarm step attempt a join token was last handed to.
	Issued map[shared.MachineID]TokenIssue `json:"issued,omitempty"`
	// ManagerTokenOut: the current manager token was handed to a machine.
	ManagerTokenOut bool `json:"manager_token_out,omitempty"`
	// RotateBy is the manager told to rotate the manager token and report the new one.
	RotateBy shared.MachineID `json:"rotate_by,omitempty"`
	// Ops are the pending day-two operations, oldest first (swarmops.go).
	Ops []shared.SwarmOp `json:"ops,omitempty"`
	// Replaced maps a lost manager to the worker promoted in its place, until the lost
	// one is removed from the swarm.
	Replaced map[shared.MachineID]shared.MachineID `json:"replaced,omitempty"`
}

// TokenIssue names one attempt of a machine's swarm step.
type TokenIssue struct {
	Generation uint64 `json:"generation"`
	Attempt    int    `json:"attempt"`
}

// Swarm returns the swarm record (with its secrets: callers decide who may see them).
func (s *Store) Swarm() Swarm {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sw := s.data.Swarm.clone()
	sw.ManagerToken, sw.WorkerToken = s.open.managerToken, s.open.workerToken // stored sealed
	return sw
}

// clone copies the record for a reader: reports change its maps in place.
func (sw Swarm) clone() Swarm {
	sw.ManagerAddrs = slices.Clone(sw.ManagerAddrs)
	sw.Managers = maps.Clone(sw.Managers)
	sw.Issued = maps.Clone(sw.Issued)
	sw.Ops = slices.Clone(sw.Ops)
	sw.Replaced = maps.Clone(sw.Replaced)
	return sw
}

// SwarmCreation returns the swarm's cluster id ("" while it does not exist) and the
// manager designated to create it, without copying the rest of the record.
func (s *Store) SwarmCreation() (clusterID string, initBy shared.MachineID) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.data.Swarm.ClusterID, s.data.Swarm.InitBy
}

// SwarmDue returns m's swarm step and that step's state when the step is due: the plan
// has one, every step before it succeeded or was skipped, the machine is installed or
// joining, and the step is running (the agent reports each attempt running before it
// runs it). Otherwise it says why not.
func SwarmDue(m *shared.Machine) (*shared.SwarmStep, *shared.StepState, error) {
	notDue := func(format string, args ...any) (*shared.SwarmStep, *shared.StepState, error) {
		return nil, nil, reject(KindConflict, RuleSwarmNotDue, string(m.ID),
			"machine %s has no swarm step due: "+format, append([]any{m.ID}, args...)...)
	}
	if m.State != shared.StateInstalled && m.State != shared.StateJoining {
		return notDue("it is %s, not installed or joining", m.State)
	}
	if m.Plan == nil || len(m.Steps) != len(m.Plan.Steps) {
		return notDue("it has no plan")
	}
	for i, st := range m.Plan.Steps {
		if st.Kind != shared.StepSwarm {
			if done := m.Steps[i].Status; done != shared.StepSucceeded && done != shared.StepSkipped {
				return notDue("step %s before it is %s", st.Name, done)
			}
			continue
		}
		if m.Steps[i].Status != shared.StepRunning {
			return notDue("its swarm step is %s, not running", m.Steps[i].Status)
		}
		return st.Swarm, &m.Steps[i], nil
	}
	return notDue("its plan has no swarm step")
}

// designateInitiator records the plan's swarm creator, if it names one. A plan may
// name one only while no swarm exists and no other planned machine creates it; else
// its init is dropped (the planner should not have set it) and the machine joins.
func (s *Store) designateInitiator(index uint64, now timeT, id shared.MachineID, p *shared.Plan) {
	for i := range p.Steps {
		st := p.Steps[i].Swarm
		if st == nil || !st.Init {
			continue
		}
		sw := &s.data.Swarm
		if sw.ClusterID == "" && (sw.InitBy == "" || sw.InitBy == id || !s.plansInit(sw.InitBy)) {
			sw.InitBy = id
			s.event(index, now, id, shared.EventPlan, "designated to create the swarm")
			continue
		}
		st.Init = false
		s.event(index, now, id, shared.EventPlan, "not creating the swarm: it exists or another manager creates it")
	}
}

// plansInit reports whether machine id is in service with a plan that creates the swarm.
func (s *Store) plansInit(id shared.MachineID) bool {
	m, ok := s.data.Machines[id]
	if !ok || m.State == shared.StateRetired || m.Plan == nil {
		return false
	}
	for _, st := range m.Plan.Steps {
		if st.Swarm != nil && st.Swarm.Init {
			return true
		}
	}
	return false
}

// ApplySwarmJoin answers a machine asking how to join: init for the designated creator
// while there is no swarm, else the swarm's id, managers and the token for its role,
// the token once per step attempt (a second ask in the same attempt gets the answer
// without it).
func (s *Store) ApplySwarmJoin(c SwarmJoin, index uint64) (Result, error) {
	return s.mutate(index, c.ID, func() (Result, error) {
		m, ok := s.data.Machines[c.ID]
		if !ok {
			return Result{}, notFound(c.ID)
		}
		step, st, err := SwarmDue(m)
		if err != nil {
			return Result{}, err
		}
		sw := &s.data.Swarm
		if sw.ClusterID == "" {
			if step.Role == shared.SwarmManager && step.Init && sw.InitBy == m.ID {
				return Result{Join: &shared.SwarmJoin{Role: shared.SwarmManager, Init: true}}, nil
			}
			return Result{}, SwarmPending(sw.InitBy)
		}
		join := &shared.SwarmJoin{Role: step.Role, ClusterID: sw.ClusterID,
			RemoteAddrs: slices.Sorted(maps.Values(s.liveManagers()))}
		attempt := TokenIssue{Generation: m.Plan.Generation, Attempt: st.Attempt}
		if prev, ok := sw.Issued[m.ID]; ok && prev == attempt {
			return Result{Join: join}, nil // the token went out for this attempt already
		}
		if sw.Issued == nil {
			sw.Issued = map[shared.MachineID]TokenIssue{}
		}
		sw.Issued[m.ID] = attempt
		join.Token = s.open.workerToken // the record holds them sealed
		if step.Role == shared.SwarmManager {
			join.Token = s.open.managerToken
			sw.ManagerTokenOut = true
		}
		s.event(index, c.Time, m.ID, shared.EventStep, fmt.Sprintf("swarm %s join token handed out (attempt %d)", step.Role, st.Attempt))
		return Result{Join: join}, nil
	})
}

// SwarmPending is the answer while the swarm does not exist yet; its Subject is the
// manager designated to create it, "" when there is none.
func SwarmPending(initBy shared.MachineID) *Rejected {
	return reject(KindPending, RuleSwarmPending, string(initBy), "the swarm does not exist yet")
}

// ApplySwarmReport records a node's swarm identity: its node id; a manager's cluster
// id and address; the creator's tokens; a rotated manager token. Everything is checked
// before anything changes.
func (s *Store) ApplySwarmReport(c SwarmReport, index uint64) (Result, error) {
	return s.mutate(index, c.ID, func() (Result, error) {
		m, ok := s.data.Machines[c.ID]
		if !ok {
			return Result{}, notFound(c.ID)
		}
		if c.Rules < SwarmRules {
			return s.replayUncheckedSwarmReport(index, c, m)
		}
		step, _, err := SwarmDue(m)
		if err != nil {
			return Result{}, err
		}
		r := c.Report
		if err := s.checkSwarmReport(m, step, &r); err != nil {
			return Result{}, err
		}
		rotate := s.recordSwarmReport(index, c.Time, m, step, &r)
		res := summaryOf(m)
		if rotate {
			res.Value = RotateManagerToken
		}
		return res, nil
	})
}

// RotateManagerToken is the swarm report result's Value when the reporting manager
// should rotate the manager join token now.
const RotateManagerToken = "rotate-manager-token"

func forbidden(id shared.MachineID, format string, args ...any) error {
	return reject(KindForbidden, RuleSwarmOwnPart, string(id), format, args...)
}

// checkSwarmReport refuses a report the machine has no right to make.
func (s *Store) checkSwarmReport(m *shared.Machine, step *shared.SwarmStep, r *shared.SwarmReport) error {
	sw := &s.data.Swarm
	manager := step.Role == shared.SwarmManager
	switch {
	case sw.ClusterID != "" && r.ClusterID != "" && r.ClusterID != sw.ClusterID:
		return reject(KindConflict, RuleSwarmOther, string(m.ID),
			"node is in swarm %s, this site's swarm is %s", r.ClusterID, sw.ClusterID)
	case !manager && (r.Addr != "" || r.ManagerToken != "" || r.Rotated):
		return forbidden(m.ID, "machine %s is a planned worker: it reports its node id (and the swarm's id) only", m.ID)
	case r.Rotated && (sw.RotateBy != m.ID || sw.ClusterID == ""):
		return forbidden(m.ID, "machine %s was not asked to rotate the manager token", m.ID)
	case r.ManagerToken != "" && !r.Rotated && (sw.InitBy != m.ID || !step.Init || r.ClusterID == ""):
		return forbidden(m.ID, "only the manager designated to create the swarm (%s) reports its id and tokens", orNobody(sw.InitBy))
	case r.Addr != "" && r.ClusterID == "":
		return reject(KindInvalid, RuleSwarmAddrNoID, string(m.ID), "a manager address comes with the swarm's cluster id")
	case manager && sw.ClusterID == "" && r.ManagerToken == "" && (r.ClusterID != "" || r.Addr != ""):
		return reject(KindPending, RuleSwarmReportEarly, string(m.ID), "the swarm does not exist yet")
	}
	if r.Addr == "" {
		return nil
	}
	if m.Addr == "" {
		return forbidden(m.ID, "machine %s has no recorded address, so it reports no manager address", m.ID)
	}
	if want := net.JoinHostPort(m.Addr, shared.SwarmPort); r.Addr != want {
		return forbidden(m.ID, "machine %s may report only its own address %s as a manager address, not %s", m.ID, want, r.Addr)
	}
	if n := len(s.liveManagers()); sw.Managers[m.ID] == "" && n >= shared.MaxSwarmManagers {
		return reject(KindConflict, RuleSwarmManagerLimit, string(m.ID),
			"the swarm has %d manager addresses, the limit is %d", n, shared.MaxSwarmManagers)
	}
	return nil
}

// liveManagers is the manager addresses of machines still in service and planned as
// managers: a retired or re-planned manager's address is neither handed out nor counted.
func (s *Store) liveManagers() map[shared.MachineID]string {
	live := map[shared.MachineID]string{}
	for id, addr := range s.data.Swarm.Managers {
		if m, ok := s.data.Machines[id]; ok && m.State != shared.StateRetired && plannedManager(m) {
			live[id] = addr
		}
	}
	return live
}

func plannedManager(m *shared.Machine) bool {
	if m.Plan == nil {
		return false
	}
	for _, st := range m.Plan.Steps {
		if st.Swarm != nil && st.Swarm.Role == shared.SwarmManager {
			return true
		}
	}
	return false
}

func orNobody(id shared.MachineID) string {
	if id == "" {
		return "none"
	}
	return string(id)
}

// recordSwarmReport applies a checked report and says whether this manager should
// rotate the manager token now.
func (s *Store) recordSwarmReport(index uint64, now timeT, m *shared.Machine, step *shared.SwarmStep, r *shared.SwarmReport) bool {
	sw := &s.data.Swarm
	switch {
	case r.Rotated:
		sw.ManagerToken, sw.ManagerTokenOut, sw.RotateBy = r.ManagerToken, false, ""
		s.openSecrets()
		s.event(index, now, m.ID, shared.EventStep, "rotated the swarm's manager join token")
	case r.ManagerToken != "" && sw.ClusterID == "":
		sw.ClusterID, sw.ManagerToken, sw.WorkerToken = r.ClusterID, r.ManagerToken, r.WorkerToken
		s.openSecrets()
		s.event(index, now, m.ID, shared.EventStep, "created swarm "+r.ClusterID)
	}
	// A creator's report repeated after the swarm exists leaves the tokens alone: they may
	// have been rotated since.
	if r.Addr != "" {
		sw.Managers = s.liveManagers()
		sw.Managers[m.ID] = r.Addr
		sw.ManagerAddrs = slices.Sorted(maps.Values(sw.Managers))
	}
	if m.SwarmNodeID != r.NodeID {
		m.SwarmNodeID = r.NodeID
		s.event(index, now, m.ID, shared.EventStep, "swarm node "+r.NodeID)
		m.UpdatedAt = now
	}
	if step.Role != shared.SwarmManager || r.Rotated || !sw.ManagerTokenOut || !s.plannedManagersJoined() {
		return false
	}
	sw.RotateBy = m.ID
	return true
}

// plannedManagersJoined reports whether every machine in service planned as a swarm
// manager has reported its node id and address.
func (s *Store) plannedManagersJoined() bool {
	for id, m := range s.data.Machines {
		if m.State != shared.StateRetired && plannedManager(m) && (m.SwarmNodeID == "" || s.data.Swarm.Managers[id] == "") {
			return false
		}
	}
	return true
}

// replayUncheckedSwarmReport applies a report logged before the rules existed exactly as
// it was applied then, so that an old log replays to the state it was acknowledged with.
// Nothing writes such entries any more (the API sets Rules).
func (s *Store) replayUncheckedSwarmReport(index uint64, c SwarmReport, m *shared.Machine) (Result, error) {
	r, sw := c.Report, &s.data.Swarm
	if sw.ClusterID != "" && r.ClusterID != "" && r.ClusterID != sw.ClusterID {
		return Result{}, reject(KindConflict, RuleSwarmOther, string(c.ID),
			"node is in swarm %s, this site's swarm is %s", r.ClusterID, sw.ClusterID)
	}
	if r.ManagerToken != "" {
		if sw.InitBy != c.ID {
			return Result{}, reject(KindForbidden, RuleSwarmCreatorOnly, string(c.ID), "only the manager that created the swarm reports its tokens")
		}
		sw.ClusterID, sw.ManagerToken, sw.WorkerToken = r.ClusterID, r.ManagerToken, r.WorkerToken
		s.openSecrets()
	}
	if r.Addr != "" && !slices.Contains(sw.ManagerAddrs, r.Addr) {
		sw.ManagerAddrs = append(sw.ManagerAddrs, r.Addr)
		slices.Sort(sw.ManagerAddrs)
	}
	if m.SwarmNodeID != r.NodeID {
		m.SwarmNodeID = r.NodeID
		s.event(index, c.Time, c.ID, shared.EventStep, "swarm node "+r.NodeID)
		m.UpdatedAt = c.Time
	}
	return summaryOf(m), nil
}

// ApplySwarmClaim replays the old first-asker-wins claim as it was applied; nothing
// proposes it any more (see SwarmClaim).
func (s *Store) ApplySwarmClaim(c SwarmClaim, index uint64) (Result, error) {
	return s.mutate(index, "", func() (Result, error) {
		if s.data.Swarm.InitBy == "" {
			s.data.Swarm.InitBy = c.ID
		}
		return Result{Value: string(s.data.Swarm.InitBy)}, nil
	})
}
