package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// Rolling upgrades. Every coordinator says in its health which protocol it speaks
// (shared.Protocol). The leader asks every member of the Raft configuration, and once
// all of them speak a newer protocol than the cluster runs at, it raises the cluster to
// the lowest of theirs (state.RaiseProtocol). Only then may newer command types be
// written (gateProtocol in apply.go). Asking over HTTP, not gossip, is deliberate: the
// first release's Serf tags have no room for a protocol (it refuses unknown tag keys),
// and its health answer is simply without one, which reads as shared.FirstProtocol.

// raiseInterval is how often the leader looks at its members' protocols.
const raiseInterval = 5 * time.Second

// peerVersion is what one member of the Raft configuration said of itself.
type peerVersion struct {
	ID          string
	Version     string
	Protocol    int
	Unreachable string // why it could not be asked; then Version and Protocol are empty
}

// peerVersions asks every member of the Raft configuration for its version and
// protocol, itself included, in configuration order.
func (s *Server) peerVersions(ctx context.Context) ([]peerVersion, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	servers := f.Configuration().Servers
	out := make([]peerVersion, len(servers))
	client, err := s.peerClient()
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	for i, srv := range servers {
		out[i].ID = string(srv.ID)
		if srv.ID == raft.ServerID(s.cfg.NodeID) {
			out[i].Version, out[i].Protocol = shared.Version, shared.Protocol
			continue
		}
		c, ok := s.store.Coordinator(string(srv.ID))
		if !ok || c.APIAddr == "" {
			out[i].Unreachable = "its API address is not recorded yet"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := peerHealth(ctx, client, c.APIAddr)
			if err != nil {
				out[i].Unreachable = err.Error()
				return
			}
			out[i].Version, out[i].Protocol = h.Version, shared.ProtocolOf(h.Protocol)
		}()
	}
	wg.Wait()
	return out, nil
}

// versionsCache keeps the last answer of peerVersions for readers (the members API and
// the status pages), so that a page reload does not ask every peer again.
type versionsCache struct {
	mu    sync.Mutex
	at    time.Time
	peers []peerVersion
}

// versionsMaxAge is how old a cached answer may be.
const versionsMaxAge = 2 * time.Second

// recentPeerVersions is peerVersions, at most versionsMaxAge old.
func (s *Server) recentPeerVersions() ([]peerVersion, error) {
	s.versions.mu.Lock()
	defer s.versions.mu.Unlock()
	if time.Since(s.versions.at) < versionsMaxAge {
		return s.versions.peers, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	peers, err := s.peerVersions(ctx)
	if err != nil {
		return nil, err
	}
	s.versions.at, s.versions.peers = time.Now(), peers
	return peers, nil
}

// peerClient is an HTTPS client that trusts only the cluster CA.
func (s *Server) peerClient() (*http.Client, error) {
	tlsCfg, err := shared.PinnedTLSConfig(s.CAFingerprint())
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}, nil
}

// peerHealth reads a peer's health answer whatever its status: a coordinator without a
// leader answers 503 with its health, and its version counts all the same.
func peerHealth(ctx context.Context, client *http.Client, apiAddr string) (shared.Health, error) {
	var h shared.Health
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+apiAddr+shared.PathHealth, nil)
	if err != nil {
		return h, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, shared.MaxSmallBody)).Decode(&h); err != nil || h.NodeID == "" {
		return h, fmt.Errorf("%s answered %s without a health record", apiAddr, resp.Status)
	}
	return h, nil
}

// raiseProtocolWhenReady runs while this node leads: it raises the cluster's protocol
// as soon as every member speaks a newer one, and says (once per change) whom it waits
// for meanwhile.
func (s *Server) raiseProtocolWhenReady(ctx context.Context) {
	tick := time.NewTicker(raiseInterval)
	defer tick.Stop()
	said := ""
	for s.store.Protocol() < shared.Protocol {
		if waiting := strings.Join(s.tryRaiseProtocol(ctx), ", "); waiting != said && waiting != "" {
			s.log.Info("cluster protocol waits for members to be upgraded", "protocol", s.store.Protocol(),
				"this_node_speaks", shared.Protocol, "waiting_for", waiting)
			said = waiting
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// tryRaiseProtocol raises the cluster's protocol if every member allows it, and
// otherwise returns the members that hold it back.
func (s *Server) tryRaiseProtocol(ctx context.Context) (waitingFor []string) {
	peers, err := s.peerVersions(ctx)
	if err != nil {
		return []string{"the Raft configuration: " + err.Error()}
	}
	from := s.store.Protocol()
	to, waitingFor := raiseTarget(peers, from)
	if to == 0 {
		return waitingFor
	}
	seen := make([]string, len(peers))
	for i, p := range peers {
		seen[i] = fmt.Sprintf("%s=%d", p.ID, p.Protocol)
	}
	cmd := state.RaiseProtocol{To: to, Time: time.Now().UTC(), Members: strings.Join(seen, " ")}
	if _, err := s.Apply(ctx, cmd); err != nil {
		s.log.Warn("raising the cluster protocol failed; trying again", "to", to, "err", err)
		return nil
	}
	s.log.Info("cluster protocol raised: every member speaks it", "from", from, "to", to, "members", cmd.Members)
	return nil
}

// raiseTarget is the protocol the cluster may move to from have: the lowest any member
// speaks, when that is newer; 0 otherwise, with the members holding it back (an
// unreachable member holds it back too: its protocol is unknown).
func raiseTarget(peers []peerVersion, have int) (to int, waitingFor []string) {
	if len(peers) == 0 {
		return 0, nil
	}
	low := shared.Protocol
	for _, p := range peers {
		switch {
		case p.Unreachable != "":
			waitingFor = append(waitingFor, p.ID+" (unreachable: "+p.Unreachable+")")
		case p.Protocol <= have:
			waitingFor = append(waitingFor, fmt.Sprintf("%s (protocol %d)", p.ID, p.Protocol))
		}
		low = min(low, p.Protocol)
	}
	if len(waitingFor) > 0 || low <= have {
		return 0, slices.Clip(waitingFor)
	}
	return low, nil
}
