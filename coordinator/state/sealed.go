package state

import (
	"fmt"

	"github.com/rivetmetal/rivet/coordinator/seal"
	"github.com/rivetmetal/rivet/shared"
)

// The replicated data holds the cluster's secrets sealed (coordinator/seal): the CA key,
// the token secret, the gossip key, the default enrolment token and the Swarm join
// tokens, and the BMC passwords of the expected machines. Commands carry them sealed too, so neither the Raft log nor a snapshot has them
// in clear. The store keeps an opened copy in memory, refreshed whenever a sealed field
// changes; Cluster() and Swarm() are the one accessor every reader goes through.

// opened is the clear copy of the sealed fields.
type opened struct {
	cluster      Cluster
	managerToken string
	workerToken  string
	bmcPasswords map[string]string // expected row key → its BMC's password
	err          error             // the first field that did not open
}

// UseSealKey sets the key that opens the sealed fields. Call it before the first command
// is applied. Without a key (unit tests, benches) the fields are read as they are.
func (s *Store) UseSealKey(k *seal.Key) {
	s.mu.Lock()
	s.sealKey = k
	s.openSecrets()
	s.mu.Unlock()
}

// SealError is why a sealed field did not open (a wrong seal.key), or nil.
func (s *Store) SealError() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.open.err
}

// openSecrets refreshes the opened copy. A field that does not open reads as empty:
// every consumer treats an empty secret as "none" and refuses (fail closed).
// The caller holds s.mu for writing.
func (s *Store) openSecrets() {
	o := opened{cluster: s.data.Cluster, bmcPasswords: map[string]string{}}
	field := func(name, v string) string {
		plain, err := s.openField(name, v)
		if err != nil && o.err == nil {
			o.err = err
		}
		return plain
	}
	c := &o.cluster
	c.CAKeyPEM = field("cluster CA key", c.CAKeyPEM)
	c.GossipKey = field("gossip key", c.GossipKey)
	c.TokenSecret = field("token secret", c.TokenSecret)
	c.EnrolToken = field("enrolment token", c.EnrolToken)
	o.managerToken = field("swarm manager token", s.data.Swarm.ManagerToken)
	o.workerToken = field("swarm worker token", s.data.Swarm.WorkerToken)
	s.open = o
	for key := range s.data.Expected {
		s.openExpected(key)
	}
}

// openField opens one sealed value; a value that does not open reads as empty.
func (s *Store) openField(name, v string) (string, error) {
	if s.sealKey == nil || v == "" {
		return v, nil
	}
	plain, err := s.sealKey.Open(v)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return plain, nil
}

// openExpected refreshes the opened BMC password of one expected row (gone or without a
// BMC: none). The caller holds s.mu for writing.
func (s *Store) openExpected(key string) {
	e, ok := s.data.Expected[key]
	if !ok || e.BMC == nil || e.BMC.Password == "" {
		delete(s.open.bmcPasswords, key)
		return
	}
	plain, err := s.openField("BMC password of expected machine "+key, e.BMC.Password)
	if err != nil && s.open.err == nil {
		s.open.err = err
	}
	if plain == "" {
		delete(s.open.bmcPasswords, key)
		return
	}
	s.open.bmcPasswords[key] = plain
}

// SealCluster returns c with its secret fields sealed, for an InitCluster command.
func SealCluster(k *seal.Key, c Cluster) Cluster {
	c.CAKeyPEM = k.Seal(c.CAKeyPEM)
	c.GossipKey = k.Seal(c.GossipKey)
	c.TokenSecret = k.Seal(c.TokenSecret)
	c.EnrolToken = k.Seal(c.EnrolToken)
	return c
}

// SealSwarmReport returns r with its join tokens sealed.
func SealSwarmReport(k *seal.Key, r SwarmReport) SwarmReport {
	r.Report.ManagerToken = k.Seal(r.Report.ManagerToken)
	r.Report.WorkerToken = k.Seal(r.Report.WorkerToken)
	return r
}

// SealExpected returns c with every row's BMC password sealed, for a PutExpected
// command: the rows are copied, c's own are left as they were.
func SealExpected(k *seal.Key, c PutExpected) PutExpected {
	rows := make([]shared.ExpectedMachine, len(c.Machines))
	for i, e := range c.Machines {
		if e.BMC != nil && e.BMC.Password != "" {
			b := *e.BMC
			b.Password = k.Seal(b.Password)
			e.BMC = &b
		}
		rows[i] = e
	}
	c.Machines = rows
	return c
}
