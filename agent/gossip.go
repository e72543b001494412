package agent

import (
	"context"
	"time"

	"github.com/rivetmetal/rivet/agent/membership"
	"github.com/rivetmetal/rivet/shared"
)

// Gossip is best effort: the agent works by polling alone, gossip adds liveness for the
// coordinators and nudges for the agent. A failure to start or join is retried with
// backoff, never fatal.
const maxGossipRetry = 5 * time.Minute

// ensureGossip starts the member and joins the coordinators when needed: at first, after
// a failure, and when no coordinator is alive any more (they all restarted, say).
func (a *Agent) ensureGossip(ctx context.Context) {
	a.mu.Lock()
	member, info, due, admitted := a.member, a.gossip, time.Now().After(a.nextGossip), a.admitted
	a.mu.Unlock()
	if !due || (member != nil && member.CoordinatorsAlive() > 0) {
		return
	}
	if info.Key == "" {
		// Registered before admission: the key comes once the operator admits the machine.
		if !admitted {
			return
		}
		_, client := a.identity()
		g, err := client.Gossip(ctx)
		if err != nil {
			a.gossipFailed("fetching the gossip key", err)
			return
		}
		info = *g
		a.mu.Lock()
		a.gossip = info
		a.mu.Unlock()
	}
	if member != nil {
		// Ask again: the coordinators may have moved or been replaced.
		_, client := a.identity()
		if g, err := client.Gossip(ctx); err == nil {
			info = *g
			a.mu.Lock()
			a.gossip = info
			a.mu.Unlock()
		}
	}
	if member == nil {
		id, _ := a.identity()
		m, err := membership.Start(membership.Config{
			ID: id, BindAddr: a.cfg.GossipBind, AdvertiseAddr: a.advertiseIP(), Key: info.Key,
			Tags: a.tags(), Logger: a.log.With("subsystem", "gossip"),
		})
		if err != nil {
			a.gossipFailed("starting gossip", err)
			return
		}
		member = m
		a.mu.Lock()
		a.member = m
		a.mu.Unlock()
	}
	if len(info.Addrs) == 0 {
		a.gossipFailed("joining gossip", errNoGossipAddrs)
		return
	}
	n, err := member.Join(info.Addrs)
	if err != nil {
		a.gossipFailed("joining gossip", err)
		return
	}
	a.mu.Lock()
	a.gossipWait = 0
	a.mu.Unlock()
	a.log.Info("joined gossip", "contacted", n, "addr", member.LocalAddr())
	a.progress(progressGossip, "gossip joined via %d coordinator(s), listening on %s", n, member.LocalAddr())
	a.updateMemberGauge()
}

type gossipError string

func (e gossipError) Error() string { return string(e) }

const errNoGossipAddrs = gossipError("the coordinator listed no gossip addresses")

func (a *Agent) gossipFailed(op string, err error) {
	a.mu.Lock()
	a.gossipWait = min(max(2*a.gossipWait, 5*time.Second), maxGossipRetry)
	a.nextGossip = time.Now().Add(jitter(a.gossipWait, 0.2))
	wait := a.gossipWait
	a.mu.Unlock()
	a.log.Warn(op+" failed; the agent keeps polling without it", "err", err, "retry_in", wait)
}

// gossipStopped handles Serf shutting the member down on its own. It does so when it
// loses a name conflict: another machine gossips with the same machine id.
func (a *Agent) gossipStopped() {
	m := a.takeMember()
	if m == nil {
		return
	}
	_ = m.Shutdown()
	id, _ := a.identity()
	a.gossipFailed("gossip", gossipError("gossip stopped on its own: another machine may be gossiping as "+
		string(id)+" (duplicate DMI UUID?); give one of them --system-uuid"))
}

// takeMember detaches the gossip member from the agent and returns it (nil when there
// is none), for the caller to stop.
func (a *Agent) takeMember() *membership.Member {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.member
	a.member = nil
	return m
}

// LeaveGossip leaves the gossip pool gracefully. Call it right before the machine
// reboots (the reboot step), so the coordinators record "left", a planned absence,
// rather than "failed". Polling goes on; the agent rejoins on its next poll if the
// reboot does not happen.
func (a *Agent) LeaveGossip() { a.stopGossip() }

// stopGossip leaves the pool on purpose (the service stops, the machine shuts down), so
// the coordinators record "left" rather than "failed".
func (a *Agent) stopGossip() {
	m := a.takeMember()
	if m == nil {
		return
	}
	if err := m.Leave(); err != nil {
		a.log.Debug("gossip leave", "err", err)
	}
	_ = m.Shutdown()
}

func (a *Agent) currentMember() *membership.Member {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.member
}

// tags are the agent's gossip tags: identity and a little state, never bulk data.
func (a *Agent) tags() shared.Tags {
	a.mu.Lock()
	defer a.mu.Unlock()
	return shared.Tags{Kind: shared.KindAgent, MachineID: a.id, State: a.state, Step: a.step, Version: tagVersion()}
}

// tagVersion is shared.Version when it is a valid tag value (it always is when the
// Makefile stamps it), else a placeholder rather than no gossip at all.
func tagVersion() string {
	t := shared.Tags{Kind: shared.KindCoordinator, API: "x", Version: shared.Version}
	if t.Validate() != nil {
		return "unknown"
	}
	return shared.Version
}

func (a *Agent) publishTags() {
	m := a.currentMember()
	if m == nil {
		return
	}
	if err := m.SetTags(a.tags()); err != nil {
		a.log.Debug("gossip tags not updated", "err", err)
	}
}

func (a *Agent) updateMemberGauge() {
	m := a.currentMember()
	if m == nil {
		return
	}
	a.metrics.members.Reset()
	for status, n := range m.Counts() {
		a.metrics.members.WithLabelValues(status).Set(float64(n))
	}
}

func (a *Agent) generation() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gen
}

func (a *Agent) rememberGeneration(g uint64) {
	a.mu.Lock()
	a.gen = g
	a.mu.Unlock()
}
