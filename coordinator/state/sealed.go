package state

import (
	"fmt"

	"github.com/rivetmetal/rivet/coordinator/seal"
)

// The replicated data holds the cluster's secrets sealed (coordinator/seal): the CA key,
// the token secret, the gossip key, the default enrolment token and the Swarm join
// tokens. Commands carry them sealed too, so neither the Raft log nor a snapshot has them
// in clear. The store keeps an opened copy in memory, refreshed whenever a sealed field
// changes; Cluster() and Swarm() are the one accessor every reader goes through.

// opened is the clear copy of the sealed fields.
type opened struct {
	cluster      Cluster
	managerToken string
	workerToken  string
	err          error // the first field that did not open
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
	o := opened{cluster: s.data.Cluster}
	field := func(name, v string) string {
		if s.sealKey == nil {
			return v
		}
		plain, err := s.sealKey.Open(v)
		if err != nil && o.err == nil {
			o.err = fmt.Errorf("%s: %w", name, err)
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
