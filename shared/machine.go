package shared

import "time"

// Machine is the coordinator's record of one machine, as the API shows it.
type Machine struct {
	ID       MachineID `json:"id"`
	Basis    string    `json:"id_basis,omitempty"` // uuid, serial or mac: see DeriveMachineID
	State    State     `json:"state"`
	LostFrom State     `json:"lost_from,omitempty"` // the state a lost machine returns to
	Role     string    `json:"role,omitempty"`
	// Labels are the operator's (import, approve): role selectors and placement read them.
	Labels map[string]string `json:"labels,omitempty"`
	// Facts are the labels the agent reported about itself. A machine's own word never
	// satisfies a selector on an operator label: selectors read facts only under facts:.
	Facts     map[string]string `json:"facts,omitempty"`
	Admission *Admission        `json:"admission,omitempty"` // nil: not admitted (yet)
	// BootMAC is the MAC a boot ticket vouched for at the last registration (the NIC
	// the machine network-booted from); empty after one with a token.
	BootMAC  string `json:"boot_mac,omitempty"`
	Addr     string `json:"addr,omitempty"` // where the agent last spoke from
	Hostname string `json:"hostname,omitempty"`
	// StaticAddress is the static address (CIDR) of the machine's expected row, if the
	// operator gave one.
	StaticAddress string        `json:"static_address,omitempty"`
	MACs          []string      `json:"macs,omitempty"` // physical NIC MACs, for the boot services
	Agent         AgentInfo     `json:"agent"`
	Inventory     *Inventory    `json:"inventory,omitempty"`
	Plan          *Plan         `json:"plan,omitempty"`
	Steps         []StepState   `json:"steps,omitempty"`
	Boot          BootTarget    `json:"boot"`
	LastError     *MachineError `json:"last_error,omitempty"`
	// Unmatched says why no role matched (or which roles matched at once): visible, not silent.
	Unmatched   string `json:"unmatched,omitempty"`
	SwarmNodeID string `json:"swarm_node_id,omitempty"`
	// Power is the last power command sent to the machine's BMC and the coordinator's
	// recovery attempts (shared/power.go).
	Power PowerInfo `json:"power,omitzero"`
	// Reprovision is the re-provisioning in progress, if any (shared/reprovision.go).
	Reprovision *Reprovision `json:"reprovision,omitempty"`
	CreatedAt   time.Time    `json:"created_at"`
	UpdatedAt   time.Time    `json:"updated_at"`
}

// Admission records the operator intent that let a machine in. Until a machine is
// admitted it is a record the operator can see and nothing more: no role, no gossip key,
// no Swarm token.
type Admission struct {
	How string    `json:"how"`          // AdmitExpected, AdmitApproved or AdmitAuto
	By  string    `json:"by,omitempty"` // the operator's token name, or the expected row
	At  time.Time `json:"at"`
}

// How a machine was admitted.
const (
	AdmitExpected = "expected" // it matched the operator's list of expected machines
	AdmitApproved = "approved" // an operator approved it
	AdmitAuto     = "auto"     // the cluster admits every machine (--admit auto, the lab's policy)
)

// NotAdmittedPrefix starts the reason shown for a machine that waits for admission.
const NotAdmittedPrefix = "not admitted"

// NotAdmitted is the reason shown for a machine that waits for the operator's intent.
func NotAdmitted(id MachineID) string {
	return NotAdmittedPrefix + ": approve it with `rivet machines approve " + string(id) +
		"`, or import it as an expected machine (`rivet machines import`)"
}

// Admitted reports whether operator intent has let the machine in.
func (m *Machine) Admitted() bool { return m.Admission != nil }

// AgentInfo is what the agent said about itself at its last check-in.
type AgentInfo struct {
	Version  string    `json:"version,omitempty"`
	Mode     AgentMode `json:"mode,omitempty"`
	LastSeen time.Time `json:"last_seen,omitzero"`
}

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
	ID MachineID `json:"id"` // empty for an expected row no machine has matched yet
	// Key names the machine's expected row (its host name, else its first MAC, else
	// serial:S): set for a row no machine has matched yet, whose State is StateExpected.
	Key      string            `json:"key,omitempty"`
	State    State             `json:"state"`
	Role     string            `json:"role,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	Addr     string            `json:"addr,omitempty"`
	Step     string            `json:"step,omitempty"`
	Progress *Progress         `json:"progress,omitempty"`
	Error    string            `json:"error,omitempty"`
	// Unmatched says why no role matched: the agent prints it, ls and the pages show it.
	Unmatched string `json:"unmatched,omitempty"`
	Admitted  bool   `json:"admitted"`
	// Reprovision is the phase of a re-provisioning in progress, if any, and how the
	// machine boots the agent for its new image.
	Reprovision    ReprovisionPhase `json:"reprovision,omitempty"`
	ReprovisionVia ReprovisionVia   `json:"reprovision_via,omitempty"`
	Updated        time.Time        `json:"updated_at"`
}

// Summary returns the light form of m.
func (m *Machine) Summary() MachineSummary {
	s := MachineSummary{ID: m.ID, State: m.State, Role: m.Role, Labels: m.Labels,
		Hostname: m.Hostname, Addr: m.Addr, Unmatched: m.Unmatched, Admitted: m.Admitted(), Updated: m.UpdatedAt}
	if cur := m.CurrentStep(); cur != nil {
		s.Step, s.Progress = cur.Name, cur.Progress
	}
	if m.LastError != nil {
		s.Error = m.LastError.Message
	}
	if m.Reprovision != nil {
		s.Reprovision, s.ReprovisionVia = m.Reprovision.Phase, m.Reprovision.Via
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
	EventAdmitted   = "admitted"
	EventLabels     = "labels" // the operator set or removed labels (rivet machines label)
	EventSwarm      = "swarm"  // a day-two swarm operation on this node (shared/swarmop.go)
	// EventConflict: someone claimed this machine's id or one of its MACs without its
	// token. The claim was refused and changed nothing else.
	EventConflict = "conflict"
)
