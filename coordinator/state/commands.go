package state

import (
	"maps"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// The command bodies. Each is applied by one Apply* method in mutations.go. Bodies are
// part of the Raft log forever: add fields, never change the meaning of one.

// Command is one change to the replicated state: a value of one of the command types
// below, and nothing else (the unexported method seals the set, so a caller cannot
// hand the write path something it cannot encode). coordinator/fsm gives each type its
// type byte.
type Command interface{ command() }

func (InitCluster) command()       {}
func (PutCoordinator) command()    {}
func (RemoveCoordinator) command() {}
func (Register) command()          {}
func (IssueTicket) command()       {}
func (PutExpected) command()       {}
func (Checkin) command()           {}
func (SetPlan) command()           {}
func (SetPlans) command()          {}
func (Report) command()            {}
func (SetBoot) command()           {}
func (Gossip) command()            {}
func (Action) command()            {}
func (PutRole) command()           {}
func (DeleteRole) command()        {}
func (PutToken) command()          {}
func (DeleteToken) command()       {}
func (EndSessions) command()       {}
func (SwarmClaim) command()        {}
func (SwarmJoin) command()         {}
func (SwarmReport) command()       {}
func (SetLabels) command()         {}

// InitCluster creates the cluster secrets and the first tokens, once.
type InitCluster struct {
	Cluster    Cluster `json:"cluster"`
	AdminToken Token   `json:"admin_token"`
	EnrolToken Token   `json:"enrol_token"`
}

// PutCoordinator records a coordinator's addresses.
type PutCoordinator struct {
	Coordinator Coordinator `json:"coordinator"`
}

// RemoveCoordinator forgets a coordinator.
type RemoveCoordinator struct {
	ID string `json:"id"`
}

// Register creates or refreshes a machine from an agent's registration. The API has
// checked the credential's signature; the identity rules that depend on the state (is the
// ticket unspent, does the token's generation still hold, may this credential claim an
// existing machine) are applied here, in log order, so two racing claims cannot both win.
type Register struct {
	ID        shared.MachineID  `json:"id"`
	Basis     string            `json:"basis"`
	Inventory shared.Inventory  `json:"inventory"`
	Labels    map[string]string `json:"labels,omitempty"` // the agent's own: stored as facts
	Mode      shared.AgentMode  `json:"mode"`
	Version   string            `json:"version"`
	Addr      string            `json:"addr,omitempty"`
	Time      time.Time         `json:"time"`
	// Credential is what the agent registered with (Cred*). Entries written before
	// admission existed have none and keep their old meaning (see ApplyRegister).
	Credential string `json:"credential,omitempty"`
	TicketHash string `json:"ticket_hash,omitempty"` // CredTicket: SHA-256 of the ticket
	TokenGen   uint64 `json:"token_gen,omitempty"`   // CredMachine: the generation presented
	// AttemptHash is the SHA-256 of the agent's attempt value: a retry of an accepted
	// registration (same attempt) is answered again instead of judged as a new claim.
	AttemptHash string `json:"attempt_hash,omitempty"`
	From        string `json:"from,omitempty"` // the caller's address, for conflict events
	// AdmitAuto: the receiving coordinator runs --admit auto.
	AdmitAuto bool `json:"admit_auto,omitempty"`
	// MaxMachines (--max-machines) refuses a new machine beyond this many; 0: no limit.
	MaxMachines int `json:"max_machines,omitempty"`
}

// Credentials a registration can carry.
const (
	CredTicket  = "ticket"  // a one-time boot ticket from the iPXE script
	CredEnrol   = "enrol"   // an enrolment (or admin) token: new machines only
	CredMachine = "machine" // the machine's own current token: re-registration
)

// IssueTicket records a boot ticket the boot services put in an iPXE script.
type IssueTicket struct {
	Hash    string    `json:"hash"` // SHA-256 of the ticket, hex
	MAC     string    `json:"mac"`
	Expires time.Time `json:"expires"`
	Time    time.Time `json:"time"`
}

// PutExpected imports expected machines: every row, in one write.
type PutExpected struct {
	Machines []shared.ExpectedMachine `json:"machines"`
	By       string                   `json:"by,omitempty"`
	Time     time.Time                `json:"time"`
}

// Checkin records that an agent is up; from the installed OS it is the first disk boot.
type Checkin struct {
	ID      shared.MachineID `json:"id"`
	Mode    shared.AgentMode `json:"mode"`
	Version string           `json:"version"`
	Addr    string           `json:"addr,omitempty"`
	Time    time.Time        `json:"time"`
}

// SetPlan is the planner's verdict for a discovered machine: a plan, or why there is none.
type SetPlan struct {
	ID        shared.MachineID `json:"id"`
	Role      string           `json:"role,omitempty"`
	Plan      *shared.Plan     `json:"plan,omitempty"`
	Unmatched string           `json:"unmatched,omitempty"`
	Time      time.Time        `json:"time"`
}

// SetPlans is a batch of planner verdicts, applied in order as one log entry: a
// planning pass over a thousand machines costs one commit, not a thousand.
type SetPlans struct {
	Plans []SetPlan `json:"plans"`
}

// Report records a step's progress or result.
type Report struct {
	ID     shared.MachineID  `json:"id"`
	Report shared.StepReport `json:"report"`
	Time   time.Time         `json:"time"`
}

// SetBoot records the machine's next network-boot answer.
type SetBoot struct {
	ID   shared.MachineID  `json:"id"`
	Boot shared.BootTarget `json:"boot"`
	Time time.Time         `json:"time"`
}

// Gossip turns a Serf event into a hint: lost, or alive again.
type Gossip struct {
	ID     shared.MachineID `json:"id"`
	Alive  bool             `json:"alive"`
	Reason string           `json:"reason,omitempty"`
	Time   time.Time        `json:"time"`
}

// Action is an operator's action on a machine.
type Action struct {
	ID     shared.MachineID `json:"id"`
	Action shared.Action    `json:"action"`
	Reason string           `json:"reason,omitempty"`
	By     string           `json:"by,omitempty"` // the operator token's name
	Time   time.Time        `json:"time"`
}

// PutRole creates or replaces a role.
type PutRole struct {
	Role shared.Role `json:"role"`
	Time time.Time   `json:"time"`
}

// DeleteRole removes a role.
type DeleteRole struct {
	Name string `json:"name"`
}

// PutToken creates a token (its secret's hash only).
type PutToken struct {
	Token Token `json:"token"`
}

// DeleteToken revokes a token.
type DeleteToken struct {
	ID string `json:"id"`
}

// EndSessions ends the status-page sessions of an operator token issued at generation
// Gen or before (a logout): the token's session generation becomes Gen+1, unless it is
// already past it, so applying it twice changes nothing more.
type EndSessions struct {
	TokenID string `json:"token_id"`
	Gen     uint64 `json:"gen"`
}

// SwarmClaim asked to be the manager that creates the swarm, first one winning. It is no
// longer proposed (the planner designates the creator, see SwarmStep.Init); it stays so
// that old log entries replay as they were applied.
type SwarmClaim struct {
	ID shared.MachineID `json:"id"`
}

// SwarmJoin is a machine asking how to join the swarm: it gets a join token at most
// once per attempt of its swarm step, so the fetch is a replicated write.
type SwarmJoin struct {
	ID   shared.MachineID `json:"id"`
	Time time.Time        `json:"time"`
}

// SwarmReport records a node's swarm identity and, from the creator, the tokens.
type SwarmReport struct {
	ID     shared.MachineID   `json:"id"`
	Report shared.SwarmReport `json:"report"`
	Time   time.Time          `json:"time"`
	// Rules is the version of the rules the report is checked by (see Swarm); entries
	// written before there were rules have 0 and replay as they were applied then.
	Rules int `json:"rules,omitempty"`
}

// SwarmRules is the current version of the swarm report rules.
const SwarmRules = 1

// Result is what applying a command gives back to the caller that proposed it. An
// agent's write (register, step report, swarm report) gives the machine's summary, all
// the agent is answered: a forwarded write's result travels back to the follower, and
// an inventory in it would be encoded and decoded on every one. An operator's command
// gives the whole machine.
type Result struct {
	Machine *shared.Machine        `json:"machine,omitempty"`
	Summary *shared.MachineSummary `json:"summary,omitempty"`
	Value   string                 `json:"value,omitempty"`
	// Join answers a SwarmJoin. Its token is a secret: the result travels only from the
	// leader to the coordinator that forwarded the command (mutual TLS), which hands it
	// to the machine that asked.
	Join *shared.SwarmJoin `json:"join,omitempty"`
	// TokenGen is a registered machine's new token generation, for its new token.
	TokenGen uint64 `json:"token_gen,omitempty"`
	// Touched: a refused command still added to this machine's timeline (a conflict).
	// It is the store's note for its watchers; it does not travel.
	Touched shared.MachineID `json:"-"`
}

func summaryOf(m *shared.Machine) Result {
	s := m.Summary()
	s.Labels = maps.Clone(s.Labels) // the result outlives the store's lock
	return Result{Summary: &s}
}

func notFound(id shared.MachineID) *Rejected {
	return reject(KindNotFound, RuleMachineUnknown, string(id), "machine %s not found", id)
}

// SetLabels sets and removes operator labels (never the agent's facts) on machines and on
// expected rows no machine has matched yet: the ones Refs names (machine ids or row
// keys; a matched row's key names its machine) and every one whose operator labels
// include all of Selector. All targets or none: one request is one write.
type SetLabels struct {
	Refs     []string          `json:"refs,omitempty"`
	Selector map[string]string `json:"selector,omitempty"`
	Set      map[string]string `json:"set,omitempty"`
	Remove   []string          `json:"remove,omitempty"`
	By       string            `json:"by,omitempty"` // the operator token's name
	Time     time.Time         `json:"time"`
}
