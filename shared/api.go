package shared

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// API paths. {id} is a MachineID, {name} a role name. Everything is under /v1 except the
// Prometheus endpoint.
const (
	PathRegister           = "/v1/register"                       // POST RegisterRequest (boot ticket, enrolment or own machine token)
	PathExpected           = "/v1/expected"                       // GET []ExpectedMachine; POST ImportRequest (admin)
	PathMachines           = "/v1/machines"                       // GET []MachineSummary (?expected=1: and the unmatched expected rows)
	PathLabels             = "/v1/labels"                         // POST LabelRequest (admin)
	PathMachine            = "/v1/machines/{id}"                  // GET Machine
	PathMachineEvents      = "/v1/machines/{id}/events"           // GET []Event
	PathMachinePlan        = "/v1/machines/{id}/plan"             // GET PlanView
	PathMachineReport      = "/v1/machines/{id}/report"           // POST StepReport (machine token)
	PathMachineCheckin     = "/v1/machines/{id}/checkin"          // POST CheckinRequest (machine token)
	PathMachineBoot        = "/v1/machines/{id}/boot"             // PUT BootRequest (machine token: bootcfg step)
	PathMachineSwarm       = "/v1/machines/{id}/swarm"            // GET SwarmJoin, PUT SwarmReport (machine token)
	PathMachineSwarmOps    = "/v1/machines/{id}/swarm/ops"        // GET SwarmOps; POST .../{op} SwarmOpReport (the runner's machine token)
	PathMachineAction      = "/v1/machines/{id}/actions/{action}" // POST ActionRequest (admin)
	PathMachineReprovision = "/v1/machines/{id}/reprovision"      // POST ReprovisionRequest (admin)
	PathMachineKexec       = "/v1/machines/{id}/kexec"            // POST: KexecAnswer (machine token, while re-imaged)
	PathRoles              = "/v1/roles"                          // GET []Role; POST RoleList (admin; ?dry_run=1)
	PathRole               = "/v1/roles/{name}"                   // GET Role; PUT Role; DELETE (admin)
	PathHealth             = "/v1/health"                         // GET Health (no token)
	PathMembers            = "/v1/members"                        // GET Members
	PathTokens             = "/v1/tokens"                         // GET []TokenInfo; POST TokenRequest (admin)
	PathToken              = "/v1/tokens/{id}"                    // DELETE (admin)
	PathClusterJoin        = "/v1/cluster/join"                   // POST JoinRequest (admin)
	PathClusterDigest      = "/v1/cluster/digest"                 // GET Digest
	PathClusterSnapshot    = "/v1/cluster/snapshot"               // POST: this coordinator snapshots now (admin)
	PathGossip             = "/v1/gossip"                         // GET GossipInfo (machine token)
	PathImages             = "/v1/images/"                        // GET image files, with Range
	PathInternalApply      = "/v1/internal/apply"                 // POST: a follower forwards a command
	PathMetrics            = "/metrics"
)

// MachinePath fills {id} (and {action}) into a path.
func MachinePath(path string, id MachineID, action ...Action) string {
	p := strings.Replace(path, "{id}", string(id), 1)
	if len(action) > 0 {
		p = strings.Replace(p, "{action}", string(action[0]), 1)
	}
	return p
}

// RegisterRequest is an agent enrolling (or re-enrolling) its machine.
type RegisterRequest struct {
	Inventory Inventory         `json:"inventory"`
	Labels    map[string]string `json:"labels,omitempty"` // from the agent's config or kernel command line
	Mode      AgentMode         `json:"mode"`
	Version   string            `json:"version"`
	Addr      string            `json:"addr,omitempty"` // the address the agent serves gossip on
	// Attempt is a random value the agent keeps for one registration and sends with every
	// retry of it: a retry whose answer was lost (a leader change mid-write) is the same
	// registration, not a second claim, although its ticket is spent by then.
	Attempt string `json:"attempt,omitempty"`
}

// Validate checks the request.
func (r *RegisterRequest) Validate() error {
	if r.Attempt != "" && (len(r.Attempt) < 16 || len(r.Attempt) > 64) {
		return fmt.Errorf("attempt: want 16 to 64 bytes")
	}
	if err := r.Inventory.Validate(); err != nil {
		return err
	}
	if err := r.Mode.Validate(); err != nil {
		return err
	}
	if len(r.Version) > 64 {
		return fmt.Errorf("version too long")
	}
	if err := ValidateLabels(r.Labels); err != nil {
		return err
	}
	if r.Addr != "" && net.ParseIP(r.Addr) == nil {
		return fmt.Errorf("addr %q is not an IP address", r.Addr)
	}
	return nil
}

// RegisterResponse gives the agent its identity, its machine token and the gossip pool.
// It does not echo the inventory back: the agent has just sent it.
type RegisterResponse struct {
	Machine      MachineSummary `json:"machine"`
	Basis        string         `json:"basis"` // what the machine id was derived from
	MachineToken string         `json:"machine_token"`
	Gossip       GossipInfo     `json:"gossip"`
}

// GossipInfo tells an agent how to join the Serf pool.
type GossipInfo struct {
	Key   string   `json:"key"`   // base64 AES key; a secret
	Addrs []string `json:"addrs"` // coordinators' gossip host:port
}

// CheckinRequest is an agent saying it is up, in which mode, on which plan generation.
type CheckinRequest struct {
	Mode       AgentMode `json:"mode"`
	Version    string    `json:"version"`
	Addr       string    `json:"addr,omitempty"`
	Generation uint64    `json:"generation"`
}

// Validate checks the request.
func (r *CheckinRequest) Validate() error {
	if err := r.Mode.Validate(); err != nil {
		return err
	}
	if len(r.Version) > 64 {
		return fmt.Errorf("version too long")
	}
	if r.Addr != "" && net.ParseIP(r.Addr) == nil {
		return fmt.Errorf("addr %q is not an IP address", r.Addr)
	}
	return nil
}

// PlanView is a machine's plan with where each step stands.
type PlanView struct {
	State State       `json:"state"`
	Plan  *Plan       `json:"plan,omitempty"`
	Steps []StepState `json:"steps,omitempty"`
}

// BootRequest sets what the boot services answer this machine next.
type BootRequest struct {
	Boot BootTarget `json:"boot"`
}

// Validate checks the request.
func (r *BootRequest) Validate() error {
	if !r.Boot.Valid() {
		return fmt.Errorf("boot %q: want agent, disk or none", r.Boot)
	}
	return nil
}

// SwarmJoin tells a node how to take its part in the Swarm. Token is a secret: it is
// handed out once per attempt of the machine's swarm step, and only while that step is
// due; a second fetch in the same attempt gets the same answer without the token. A
// worker never gets the manager token. Init is set only for the machine the planner
// designated to create the swarm (its plan's swarm step says init).
type SwarmJoin struct {
	Role        string   `json:"role"`           // manager or worker
	Init        bool     `json:"init,omitempty"` // this node creates the swarm
	RemoteAddrs []string `json:"remote_addrs,omitempty"`
	Token       string   `json:"token,omitempty"`
	ClusterID   string   `json:"cluster_id,omitempty"` // the swarm this node must be in
}

// SwarmPort is the Swarm control plane's port. A manager's address is reported, and
// handed to joining nodes, only on this port.
const SwarmPort = "2377"

// MaxSwarmManagers bounds the manager addresses the coordinator keeps and hands out: the
// planner places 3 or 5; more than 7 managers only slow the swarm's Raft down.
const MaxSwarmManagers = 7

// SwarmReport is a node telling the coordinator its swarm node id; a manager adds the
// swarm's id and its own address, the designated first manager the swarm's join tokens,
// and a manager told to rotate the manager token the new one (Rotated, ManagerToken).
type SwarmReport struct {
	NodeID       string `json:"node_id"`
	ClusterID    string `json:"cluster_id,omitempty"`
	Addr         string `json:"addr,omitempty"` // manager's own IP:2377
	ManagerToken string `json:"manager_token,omitempty"`
	WorkerToken  string `json:"worker_token,omitempty"`
	Rotated      bool   `json:"rotated,omitempty"` // ManagerToken is the rotated manager token
}

// Validate checks the report.
func (r *SwarmReport) Validate() error {
	if r.NodeID == "" || len(r.NodeID) > 128 || len(r.ClusterID) > 128 {
		return fmt.Errorf("node_id is required; node_id and cluster_id are at most 128 bytes")
	}
	switch {
	case r.Rotated && (r.ManagerToken == "" || r.WorkerToken != ""):
		return fmt.Errorf("a rotation report carries the new manager token only")
	case !r.Rotated && (r.ManagerToken == "") != (r.WorkerToken == ""):
		return fmt.Errorf("give both tokens or neither")
	}
	if len(r.ManagerToken) > 256 || len(r.WorkerToken) > 256 {
		return fmt.Errorf("a join token is at most 256 bytes")
	}
	if r.Addr != "" {
		host, port, err := net.SplitHostPort(r.Addr)
		if err != nil || net.ParseIP(host) == nil || port != SwarmPort {
			return fmt.Errorf("addr %.64q: want the manager's IP address and port %s", r.Addr, SwarmPort)
		}
	}
	return nil
}

// SwarmReportAnswer is the coordinator's answer to a swarm report: the machine, and
// whether this manager should now rotate the swarm's manager join token (every planned
// manager has joined with it) and report the new one.
type SwarmReportAnswer struct {
	MachineSummary
	RotateManagerToken bool `json:"rotate_manager_token,omitempty"`
}

// ActionRequest carries an operator's reason, kept on the timeline.
type ActionRequest struct {
	Reason string `json:"reason,omitempty"`
}

// Validate checks the request.
func (r *ActionRequest) Validate() error {
	if len(r.Reason) > 1024 {
		return fmt.Errorf("reason too long")
	}
	return nil
}

// TokenRequest asks for a new operator or enrolment token.
type TokenRequest struct {
	Name string    `json:"name"`
	Role TokenRole `json:"role"`
}

// Validate checks the request.
func (r *TokenRequest) Validate() error {
	if err := ValidateName("token", r.Name); err != nil {
		return err
	}
	return r.Role.Validate()
}

// TokenInfo describes a token without its secret.
type TokenInfo struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      TokenRole `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

// TokenCreated is the only answer that ever carries a token's secret.
type TokenCreated struct {
	TokenInfo
	Secret string `json:"secret"`
}

// JoinRequest asks the cluster to add a coordinator as a Raft voter.
type JoinRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
}

// Validate checks the request.
func (r *JoinRequest) Validate() error {
	if err := ValidateName("coordinator", r.ID); err != nil {
		return err
	}
	for _, a := range []string{r.RaftAddr, r.APIAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("address %q: %v", a, err)
		}
	}
	return nil
}

// Health is a coordinator's view of itself and the cluster.
type Health struct {
	Status        HealthStatus `json:"status"`
	NodeID        string       `json:"node_id"`
	RaftState     string       `json:"raft_state"`
	Leader        string       `json:"leader,omitempty"` // leader's node id
	LeaderAPI     string       `json:"leader_api,omitempty"`
	AppliedIndex  uint64       `json:"applied_index"`
	Voters        int          `json:"voters"`
	Machines      int          `json:"machines"`
	Version       string       `json:"version"`
	CAFingerprint string       `json:"ca_fingerprint,omitempty"`
	// Protocol is the newest protocol this coordinator speaks; ClusterProtocol the one
	// the cluster runs at (shared.Protocol). Both are absent from the first release.
	Protocol        int `json:"protocol,omitempty"`
	ClusterProtocol int `json:"cluster_protocol,omitempty"`
}

// Members lists the Raft peers and the Serf pool.
type Members struct {
	Raft []RaftPeer   `json:"raft"`
	Serf []SerfMember `json:"serf"`
	// ClusterProtocol is the protocol the cluster runs at (see shared.Protocol).
	ClusterProtocol int `json:"cluster_protocol,omitempty"`
}

// RaftPeer is one coordinator in the Raft configuration.
type RaftPeer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	APIAddr  string `json:"api_addr,omitempty"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
	// Version and Protocol are what the peer's own health says; Unreachable says why it
	// could not be asked (then both are empty).
	Version     string `json:"version,omitempty"`
	Protocol    int    `json:"protocol,omitempty"`
	Unreachable string `json:"unreachable,omitempty"`
}

// SerfMember is one member of the gossip pool.
type SerfMember struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Status string `json:"status"`
	Tags   Tags   `json:"tags"`
}

// Digest is a hash of the whole replicated state at one applied index.
type Digest struct {
	Index  uint64 `json:"index"`
	SHA256 string `json:"sha256"`
}
