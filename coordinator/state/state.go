// Package state is the coordinator's replicated data and its one owner. Every mutation
// comes from the FSM (coordinator/fsm) in log order and must be deterministic: it reads
// the time and ids from the command, never from the clock or a random source. Readers
// (API handlers, status pages, boot services) take copies under a read lock.
package state

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/coordinator/seal"
	"github.com/rivetmetal/rivet/shared"
)

// MaxEventsPerMachine bounds a machine's timeline; older events fall off.
const MaxEventsPerMachine = 200

// Data is everything that is replicated: the snapshot is its canonical JSON.
type Data struct {
	Cluster      Cluster                              `json:"cluster"`
	Coordinators map[string]Coordinator               `json:"coordinators"`
	Machines     map[shared.MachineID]*shared.Machine `json:"machines"`
	Events       map[shared.MachineID][]shared.Event  `json:"events"`
	Roles        map[string]*shared.Role              `json:"roles"`
	Tokens       map[string]*Token                    `json:"tokens"`
	Swarm        Swarm                                `json:"swarm"`
	TokenGens    map[shared.MachineID]uint64          `json:"token_gens"`
	// Expected is the operator's list of machines that should appear, by row key.
	Expected map[string]*shared.ExpectedMachine `json:"expected"`
	// Tickets are the outstanding boot tickets, by the SHA-256 of the ticket.
	Tickets map[string]Ticket `json:"tickets"`
	// Attempts holds each machine's last accepted registration attempt (a SHA-256).
	Attempts map[shared.MachineID]string `json:"attempts"`
	// Protocol is the cluster's protocol (protocol.go); absent while it is the first.
	Protocol int `json:"protocol,omitempty"`
}

// Cluster holds the secrets created once, on the first leader. They are replicated so
// that every coordinator serves with the same CA and verifies the same tokens.
type Cluster struct {
	CACertPEM   string    `json:"ca_cert_pem,omitempty"`
	CAKeyPEM    string    `json:"ca_key_pem,omitempty"`
	GossipKey   string    `json:"gossip_key,omitempty"`   // base64 AES-256 key
	TokenSecret string    `json:"token_secret,omitempty"` // HMAC key for machine and internal tokens
	EnrolToken  string    `json:"enrol_token,omitempty"`  // the default enrolment token, for boot scripts
	CreatedAt   time.Time `json:"created_at,omitzero"`
}

// Initialised reports whether the cluster secrets exist.
func (c Cluster) Initialised() bool { return c.CACertPEM != "" }

// Coordinator is one Raft member's addresses.
type Coordinator struct {
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	APIAddr    string `json:"api_addr"`
	GossipAddr string `json:"gossip_addr,omitempty"`
}

// Token is an operator or enrolment token. Only the SHA-256 of its secret is kept.
type Token struct {
	ID         string           `json:"id"`
	Name       string           `json:"name"`
	Role       shared.TokenRole `json:"role"`
	SecretHash string           `json:"secret_hash"`
	CreatedAt  time.Time        `json:"created_at"`
	// SessionGen is the generation of the status-page sessions made with this token: a
	// session cookie names the generation it was issued at, and a logout raises it, which
	// ends every session of the token on every coordinator.
	SessionGen uint64 `json:"session_gen,omitempty"`
}

// Info is the token without its hash.
func (t *Token) Info() shared.TokenInfo {
	return shared.TokenInfo{ID: t.ID, Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt}
}

// Store is the replicated state with its lock. Mutating methods are for the FSM only.
type Store struct {
	mu      sync.RWMutex
	data    Data
	applied uint64
	byMAC   map[string]shared.MachineID // derived: MAC → machine, for the boot services
	// derived: MAC, "serial:S" or "uuid:U" → expected row key, for admission
	expectedBy map[string]string
	// notifyAfter: machines a bulk write changed, told to watchers once the lock is released
	notifyAfter []shared.MachineID
	watch       func(shared.MachineID) // called after a machine changed (metrics)
	subs        watchers               // live readers (status pages, watch): watch.go
	sealKey     *seal.Key              // opens the sealed fields: sealed.go
	open        opened                 // the sealed fields in clear, derived
	// expectedChanged: a write changed the expected rows, which the pages list; its
	// watchers are told that anything may have changed.
	expectedChanged bool
}

// New returns an empty store.
func New() *Store {
	s := &Store{}
	s.reset(emptyData())
	return s
}

func emptyData() Data {
	return Data{
		Coordinators: map[string]Coordinator{},
		Machines:     map[shared.MachineID]*shared.Machine{},
		Events:       map[shared.MachineID][]shared.Event{},
		Roles:        map[string]*shared.Role{},
		Tokens:       map[string]*Token{},
		TokenGens:    map[shared.MachineID]uint64{},
		Expected:     map[string]*shared.ExpectedMachine{},
		Tickets:      map[string]Ticket{},
		Attempts:     map[shared.MachineID]string{},
	}
}

func (s *Store) reset(d Data) {
	s.data = d
	s.byMAC = map[string]shared.MachineID{}
	for id, m := range d.Machines {
		s.indexMACs(id, m.MACs)
	}
	s.expectedBy = map[string]string{}
	for key, e := range d.Expected {
		s.indexExpected(key, e)
	}
	s.openSecrets()
}

// OnMachineChange registers a callback run (outside the lock) after a machine changes.
func (s *Store) OnMachineChange(fn func(shared.MachineID)) {
	s.mu.Lock()
	s.watch = fn
	s.mu.Unlock()
}

func (s *Store) indexMACs(id shared.MachineID, macs []string) {
	for _, mac := range macs {
		if hw, err := net.ParseMAC(mac); err == nil {
			s.byMAC[hw.String()] = id
		}
	}
}

// Applied returns the Raft index of the last applied command.
func (s *Store) Applied() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Snapshot takes a point-in-time copy of the whole state, cheap enough to take under
// the read lock; it is encoded outside the lock with Snapshot.Encode (at 10,000
// machines the encoding takes seconds, and a held read lock would stall every Raft apply
// behind it).
func (s *Store) Snapshot() Snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return Snapshot{data: s.frozen(), Applied: s.applied}
}

// Restore replaces the whole state with d, decoded from a Snapshot's encoding, and sets
// the applied index.
func (s *Store) Restore(d *Data, applied uint64) {
	fillNilMaps(d)
	s.mu.Lock()
	s.reset(*d)
	s.applied = applied
	s.mu.Unlock()
	s.subs.notify("") // a restored snapshot may change any machine
}

// fillNilMaps gives every map a snapshot left nil (an older encoding, an empty
// section) an empty one, as emptyData has.
func fillNilMaps(d *Data) {
	orEmpty(&d.Coordinators)
	orEmpty(&d.Machines)
	orEmpty(&d.Events)
	orEmpty(&d.Roles)
	orEmpty(&d.Tokens)
	orEmpty(&d.TokenGens)
	orEmpty(&d.Expected)
	orEmpty(&d.Tickets)
	orEmpty(&d.Attempts)
}

func orEmpty[K comparable, V any](m *map[K]V) {
	if *m == nil {
		*m = map[K]V{}
	}
}

// Digest is the SHA-256 of the canonical state: equal on every coordinator that applied
// the same log, and across restarts.
func (s *Store) Digest() (shared.Digest, error) {
	snap := s.Snapshot()
	h := sha256.New()
	if err := snap.Encode(h); err != nil {
		return shared.Digest{}, err
	}
	return shared.Digest{Index: snap.Applied, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Cluster returns the cluster secrets, opened.
func (s *Store) Cluster() Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.open.cluster
}

// sortedValues returns view of every value of m, sorted by key.
func sortedValues[K comparable, V, T any, O cmp.Ordered](m map[K]V, view func(V) T, key func(T) O) []T {
	out := make([]T, 0, len(m))
	for _, v := range m {
		out = append(out, view(v))
	}
	slices.SortFunc(out, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	return out
}

// Coordinators returns the known coordinators sorted by id.
func (s *Store) Coordinators() []Coordinator {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedValues(s.data.Coordinators, func(c Coordinator) Coordinator { return c },
		func(c Coordinator) string { return c.ID })
}

// Coordinator returns one coordinator's record.
func (s *Store) Coordinator(id string) (Coordinator, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.data.Coordinators[id]
	return c, ok
}

// Machine returns a deep copy of one machine.
func (s *Store) Machine(id shared.MachineID) (*shared.Machine, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.data.Machines[id]
	if !ok {
		return nil, false
	}
	return clone(m), true
}

// MachineByMAC finds the machine that registered a NIC with this MAC.
func (s *Store) MachineByMAC(mac net.HardwareAddr) (*shared.Machine, bool) {
	s.mu.RLock()
	id, ok := s.byMAC[mac.String()]
	s.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return s.Machine(id)
}

// Machines returns summaries of every machine, sorted by id.
func (s *Store) Machines() []shared.MachineSummary {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedValues(s.data.Machines, (*shared.Machine).Summary,
		func(m shared.MachineSummary) shared.MachineID { return m.ID })
}

// MachinesFull returns deep copies of every machine, sorted by id (for the planner).
func (s *Store) MachinesFull() []*shared.Machine {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedValues(s.data.Machines, clone, func(m *shared.Machine) shared.MachineID { return m.ID })
}

// MachineCount is how many machines the store holds.
func (s *Store) MachineCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.data.Machines)
}

// CountByState counts machines per state, and the expected rows no machine has
// matched yet as StateExpected.
func (s *Store) CountByState() map[shared.State]int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	counts := map[shared.State]int{}
	for _, m := range s.data.Machines {
		counts[m.State]++
	}
	for _, e := range s.data.Expected {
		if s.pending(e) {
			counts[shared.StateExpected]++
		}
	}
	return counts
}

// Events returns a machine's timeline, oldest first.
func (s *Store) Events(id shared.MachineID) []shared.Event {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]shared.Event(nil), s.data.Events[id]...)
}

// Roles returns every role sorted by name.
func (s *Store) Roles() []shared.Role {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedValues(s.data.Roles, func(r *shared.Role) shared.Role { return *cloneRole(r) },
		func(r shared.Role) string { return r.Name })
}

// Role returns one role.
func (s *Store) Role(name string) (*shared.Role, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.data.Roles[name]
	if !ok {
		return nil, false
	}
	return cloneRole(r), true
}

// Token returns a token record by id.
func (s *Store) Token(id string) (Token, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.data.Tokens[id]
	if !ok {
		return Token{}, false
	}
	return *t, true
}

// Tokens lists tokens without their hashes, sorted by name.
func (s *Store) Tokens() []shared.TokenInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedValues(s.data.Tokens, (*Token).Info, func(t shared.TokenInfo) string { return t.Name })
}

// TokenGen returns the generation of a machine's token, and whether this store knows
// the machine at all (a follower may not have applied its registration yet).
func (s *Store) TokenGen(id shared.MachineID) (gen uint64, known bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, known = s.data.Machines[id]
	return s.data.TokenGens[id], known
}

// clone copies a machine for a reader. Mutations replace Inventory, Plan, LastError,
// MACs and step Progress wholesale and never change them in place, so those are shared;
// Steps and Labels, which mutations do change in place, are copied.
func clone(m *shared.Machine) *shared.Machine {
	c := *m
	c.Steps = append([]shared.StepState(nil), m.Steps...)
	if m.Labels != nil {
		c.Labels = make(map[string]string, len(m.Labels))
		for k, v := range m.Labels {
			c.Labels[k] = v
		}
	}
	return &c
}

func cloneRole(r *shared.Role) *shared.Role {
	b, _ := json.Marshal(r)
	var c shared.Role
	_ = json.Unmarshal(b, &c)
	return &c
}

// Discovery summarises the machines waiting for a plan, without copying them: the
// planner uses it to decide cheaply whether a planning pass is due.
type Discovery struct {
	Waiting        int       // discovered and not yet told why they are unmatched
	Unmatched      int       // discovered, told why no role matches
	Newest, Oldest time.Time // CreatedAt of the waiting machines
}

// Discovery returns the current discovery summary.
func (s *Store) Discovery() Discovery {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var d Discovery
	for _, m := range s.data.Machines {
		if m.State != shared.StateDiscovered {
			continue
		}
		if m.Unmatched != "" {
			d.Unmatched++
			continue
		}
		d.Waiting++
		// A machine arrives for planning when it is admitted, which may be long after it
		// registered: machines approved together are planned together.
		arrived := m.CreatedAt
		if m.Admission != nil && m.Admission.At.After(arrived) {
			arrived = m.Admission.At
		}
		if arrived.After(d.Newest) {
			d.Newest = arrived
		}
		if d.Oldest.IsZero() || arrived.Before(d.Oldest) {
			d.Oldest = arrived
		}
	}
	return d
}

// RolesVersion is a digest of the roles: it changes whenever a role does.
func (s *Store) RolesVersion() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, _ := json.Marshal(s.data.Roles)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
