package shared

import "time"

// Machine is the coordinator's record of one machine, as the API shows it.
type Machine struct {
	ID        MachineID         `json:"id"`
	Basis     string            `json:"id_basis,omitempty"` // uuid, serial or mac: see DeriveMachineID
	State     State             `json:"state"`
	LostFrom  State             `json:"lost_from,omitempty"` // the state a lost machine returns to
	Role      string            `json:"role,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Addr      string            `json:"addr,omitempty"` // where the agent last spoke from
	Hostname  string            `json:"hostname,omitempty"`
	MACs      []string          `json:"macs,omitempty"` // physical NIC MACs, for the boot services
	Agent     AgentInfo         `json:"agent"`
	Inventory *Inventory        `json:"inventory,omitempty"`
	Plan      *Plan             `json:"plan,omitempty"`
	Steps     []StepState       `json:"steps,omitempty"`
	Boot      BootTarget        `json:"boot"`
	LastError *MachineError     `json:"last_error,omitempty"`
	// Unmatched says why no role matched (or which roles matched at once): visible, not silent.
	Unmatched   string    `json:"unmatched,omitempty"`
	SwarmNodeID string    `json:"swarm_node_id,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// AgentInfo is what the agent said about itself at its last check-in.
type AgentInfo struct {
	Version  string    `json:"version,omitempty"`
	Mode     string    `json:"mode,omitempty"` // "ram" or "service"
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// Agent modes.
const (
	ModeRAM     = "ram"
	ModeService = "service"
)

// MachineError is the last failure of a machine, with what an operator can do next.
type MachineError struct {
	Step    string    `json:"step,omitempty"`
	Message string    `json:"message"`
	Hint    string    `json:"hint,omitempty"`
	At      time.Time `json:"at"`
}

// CurrentStep returns the first step that is not finished, or nil.
func (m *Machine) CurrentStep() *StepState {
	for i := range m.Steps {
		switch m.Steps[i].Status {
		case StepSucceeded, StepSkipped:
			continue
		}
		return &m.Steps[i]
	}
	return nil
}

// MachineSummary is the light form of a Machine for lists and the fleet page.
type MachineSummary struct {
	ID       MachineID         `json:"id"`
	State    State             `json:"state"`
	Role     string            `json:"role,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	Addr     string            `json:"addr,omitempty"`
	Step     string            `json:"step,omitempty"`
	Progress *Progress         `json:"progress,omitempty"`
	Error    string            `json:"error,omitempty"`
	// Unmatched says why no role matched: the agent prints it, ls and the pages show it.
	Unmatched string    `json:"unmatched,omitempty"`
	Updated   time.Time `json:"updated_at"`
}

// Summary returns the light form of m.
func (m *Machine) Summary() MachineSummary {
	s := MachineSummary{ID: m.ID, State: m.State, Role: m.Role, Labels: m.Labels,
		Hostname: m.Hostname, Addr: m.Addr, Unmatched: m.Unmatched, Updated: m.UpdatedAt}
	if cur := m.CurrentStep(); cur != nil {
		s.Step, s.Progress = cur.Name, cur.Progress
	}
	if m.LastError != nil {
		s.Error = m.LastError.Message
	}
	return s
}

// Event is one entry of a machine's timeline.
type Event struct {
	Index     uint64    `json:"index"` // the Raft index that recorded it: a total order
	Time      time.Time `json:"time"`
	MachineID MachineID `json:"machine_id"`
	Kind      string    `json:"kind"` // see the Event* constants
	Message   string    `json:"message"`
}

// Event kinds.
const (
	EventRegistered = "registered"
	EventState      = "state"
	EventPlan       = "plan"
	EventStep       = "step"
	EventGossip     = "gossip"
	EventAction     = "action"
)
