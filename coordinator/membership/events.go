package membership

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/rivetmetal/rivet/internal/gossip"
	"github.com/rivetmetal/rivet/shared"
)

// hint is what gossip last said about one machine.
type hint struct {
	alive  bool
	addr   string // alive: the member's IP
	reason string // lost: ReasonFailed or ReasonLeft
}

// readEvents drains Serf's event channel. Serf blocks its own goroutines while the
// channel is full, so nothing here waits on the Recorder: hints are queued for the
// dispatcher instead.
func (p *Pool) readEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-p.events:
			me, ok := ev.(serf.MemberEvent)
			if !ok {
				continue // coordinators answer no user events or queries
			}
			for _, m := range me.Members {
				p.observe(me.Type, m)
			}
		}
	}
}

// observe turns one member event into a hint, queued only when it differs from the last.
func (p *Pool) observe(typ serf.EventType, m serf.Member) {
	tags, ok := p.parseTags(m)
	if !ok {
		return
	}
	if tags.Kind == shared.KindCoordinator {
		p.log.Info("coordinator "+typ.String(), "node", m.Name, "addr", m.Addr.String(), "api", tags.API)
		return
	}
	id := tags.MachineID
	var h hint
	switch typ {
	case serf.EventMemberJoin, serf.EventMemberUpdate:
		if m.Status != serf.StatusAlive {
			return
		}
		h = hint{alive: true, addr: m.Addr.String()}
	case serf.EventMemberFailed:
		h = hint{reason: ReasonFailed}
	case serf.EventMemberLeave:
		h = hint{reason: ReasonLeft}
	case serf.EventMemberReap:
		// Serf gave up reconnecting: the machine was reported lost long ago.
		p.mu.Lock()
		delete(p.known, id)
		p.mu.Unlock()
		return
	default:
		return
	}
	p.mu.Lock()
	last, seen := p.known[id]
	p.known[id] = h
	p.mu.Unlock()
	if seen && last == h {
		return // a tag update (state, step): nothing new for the machine record
	}
	p.log.Debug("gossip hint", "machine", id, "event", typ.String(), "addr", h.addr)
	p.rec.queue(id, h)
}

// parseTags validates a member's tags; a member that fails is logged once and ignored.
func (p *Pool) parseTags(m serf.Member) (shared.Tags, bool) {
	tags, err := shared.ParseTags(m.Tags)
	if err == nil && tags.Kind == shared.KindAgent && string(tags.MachineID) != m.Name {
		err = errors.New("agent member name differs from its machine id tag")
	}
	if err != nil {
		p.mu.Lock()
		first := !p.warned[m.Name]
		p.warned[m.Name] = true
		p.mu.Unlock()
		if first {
			p.log.Warn("ignoring gossip member with unusable tags (another pool or a newer Rivet?)",
				"node", m.Name, "addr", m.Addr.String(), "err", err)
		}
		return shared.Tags{}, false
	}
	return tags, true
}

// Reconcile queues the current gossip view of every agent for the Recorder, whether or
// not it was reported before. Call it when this coordinator becomes the Raft leader, so
// that hints a follower dropped reach the record. It returns how many were queued.
func (p *Pool) Reconcile() int {
	n := 0
	for _, m := range p.serf.Members() {
		tags, ok := p.parseTags(m)
		if !ok || tags.Kind != shared.KindAgent {
			continue
		}
		var h hint
		switch m.Status {
		case serf.StatusAlive:
			h = hint{alive: true, addr: m.Addr.String()}
		case serf.StatusFailed:
			h = hint{reason: ReasonFailed}
		case serf.StatusLeft:
			h = hint{reason: ReasonLeft}
		default:
			continue
		}
		p.mu.Lock()
		p.known[tags.MachineID] = h
		p.mu.Unlock()
		p.rec.queue(tags.MachineID, h)
		n++
	}
	return n
}

// dispatcher calls the Recorder from one goroutine, keeping only the newest hint per
// machine: after a flap (failed, alive) the record ends where gossip ended.
type dispatcher struct {
	rec  Recorder
	log  *slog.Logger
	mu   sync.Mutex
	next map[shared.MachineID]hint
	wake chan struct{}
}

const (
	recorderTimeout  = 10 * time.Second
	maxRecorderRetry = 30 * time.Second
)

func newDispatcher(rec Recorder, log *slog.Logger) *dispatcher {
	return &dispatcher{rec: rec, log: log, next: map[shared.MachineID]hint{}, wake: make(chan struct{}, 1)}
}

func (d *dispatcher) queue(id shared.MachineID, h hint) {
	d.mu.Lock()
	d.next[id] = h
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// take removes and returns one queued hint.
func (d *dispatcher) take() (shared.MachineID, hint, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, h := range d.next {
		delete(d.next, id)
		return id, h, true
	}
	return "", hint{}, false
}

// requeue puts a failed hint back unless a newer one arrived meanwhile.
func (d *dispatcher) requeue(id shared.MachineID, h hint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, newer := d.next[id]; !newer {
		d.next[id] = h
	}
}

func (d *dispatcher) run(ctx context.Context) {
	retry := time.Duration(0)
	for {
		id, h, ok := d.take()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-d.wake:
				continue
			}
		}
		if err := d.deliver(ctx, id, h); err != nil {
			if ctx.Err() != nil {
				return
			}
			d.requeue(id, h)
			retry = min(max(2*retry, 500*time.Millisecond), maxRecorderRetry)
			d.log.Warn("recording gossip hint failed; retrying", "machine", id, "in", retry, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			continue
		}
		retry = 0
	}
}

func (d *dispatcher) deliver(ctx context.Context, id shared.MachineID, h hint) error {
	ctx, cancel := context.WithTimeout(ctx, recorderTimeout)
	defer cancel()
	if h.alive {
		return d.rec.MachineAlive(ctx, id, h.addr)
	}
	return d.rec.MachineLost(ctx, id, h.reason)
}

// ErrNotMember is returned by Nudge for a machine that is not an alive pool member.
var ErrNotMember = errors.New("machine is not an alive gossip member")

// ErrNoAck is returned by Nudge when the machine did not acknowledge in time.
var ErrNoAck = errors.New("machine did not acknowledge the nudge")

// Nudge tells one agent that its plan changed, so it polls now instead of at its next
// interval. It returns once the agent acknowledged, or ErrNoAck when the query timed
// out. Callers on a hot path should bound ctx or call it in a goroutine: a nudge is an
// optimisation, the agent polls anyway.
func (p *Pool) Nudge(ctx context.Context, id shared.MachineID) error {
	if err := id.Validate(); err != nil {
		return err
	}
	if !p.aliveAgent(id) {
		return ErrNotMember
	}
	resp, err := p.serf.Query(gossip.QueryPlanChanged, nil, &serf.QueryParam{
		FilterNodes: []string{string(id)}, // agents are named by machine id
		RequestAck:  true,
	})
	if err != nil {
		return err
	}
	defer resp.Close()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case from, ok := <-resp.AckCh():
			if !ok {
				return ErrNoAck
			}
			if from == string(id) {
				return nil
			}
		}
	}
}

func (p *Pool) aliveAgent(id shared.MachineID) bool {
	for _, m := range p.serf.Members() {
		if m.Name == string(id) && m.Status == serf.StatusAlive {
			_, ok := p.parseTags(m)
			return ok
		}
	}
	return false
}
