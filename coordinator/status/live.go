package status

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// Live updates: one hub per handler subscribes to the store while at least one browser
// listens. It wakes when machines change, waits until the coalescing interval since its
// last batch has passed, then encodes the changed machines once and hands the same bytes
// to every client. So a machine reporting progress ten times a second costs each client
// one update per second, and a hundred clients cost one encoding.

const (
	clientBuffer = 32
	keepAlive    = 15 * time.Second
)

// message is one batch, encoded once for every client that takes all of it.
type message struct {
	raw   []byte
	batch *shared.LiveBatch
}

type client struct {
	ch   chan message
	slow atomic.Bool // missed a batch: must reload
}

type hub struct {
	store       *state.Store
	interval    time.Duration
	domainLabel string // the failure-domain label each update carries the value of

	mu      sync.Mutex
	clients map[*client]struct{}
	stop    context.CancelFunc // ends the running loop; nil when idle
	done    chan struct{}
	quit    chan struct{} // closed by Close: every stream ends
	closed  bool
}

func newHub(store *state.Store, interval time.Duration, domainLabel string) *hub {
	return &hub{store: store, interval: interval, domainLabel: domainLabel, clients: map[*client]struct{}{}, quit: make(chan struct{})}
}

// close ends every stream and refuses new ones.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.quit)
	}
}

func (h *hub) join() *client {
	c := &client{ch: make(chan message, clientBuffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients[c] = struct{}{}
	if h.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		h.stop, h.done = cancel, make(chan struct{})
		go h.run(ctx, h.store.Subscribe(), h.done)
	}
	return c
}

func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
	if len(h.clients) == 0 && h.stop != nil {
		h.stop()
		h.stop = nil
	}
}

func (h *hub) run(ctx context.Context, sub *state.Subscription, done chan struct{}) {
	defer close(done)
	defer sub.Close()
	last := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.Ready():
		}
		if wait := h.interval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		ids, all := sub.Take()
		if len(ids) == 0 && !all {
			continue
		}
		last = time.Now()
		b := h.batch(ids, all)
		h.broadcast(message{raw: shared.EncodeLiveBatch(b), batch: &b})
	}
}

// batch builds the update for the changed machines. A restored snapshot, or more changes
// than pages would want to patch one by one, asks the pages to reload instead.
func (h *hub) batch(ids []shared.MachineID, all bool) shared.LiveBatch {
	counts := h.store.CountByState()
	b := shared.LiveBatch{Counts: counts}
	for _, n := range counts {
		b.Total += n
	}
	if all {
		b.Reload = true
		return b
	}
	b.Machines = make([]shared.LiveUpdate, 0, len(ids))
	for _, id := range ids {
		m, ok := h.store.Machine(id)
		if !ok {
			b.Machines = append(b.Machines, shared.LiveUpdate{ID: id, Gone: true})
			continue
		}
		b.Machines = append(b.Machines, updateFor(m.Summary(), h.domainLabel))
	}
	return b
}

func updateFor(m shared.MachineSummary, domainLabel string) shared.LiveUpdate {
	t := tileFor(m)
	u := shared.LiveUpdate{ID: m.ID, State: m.State, Role: m.Role, Domain: m.Labels[domainLabel], Hostname: m.Hostname,
		Step: m.Step, Percent: m.Progress.Percent(), Title: t.Title, Width: t.Width, Error: auth.Redact(m.Error)}
	if m.Progress != nil {
		u.Rate = m.Progress.BytesPerSec
	}
	return u
}

// broadcast hands msg to every client without waiting: a client too slow to take it
// is marked and told to reload once it catches up.
func (h *hub) broadcast(msg message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.ch <- msg:
		default:
			c.slow.Store(true)
		}
	}
}

// events is the Server-Sent Events stream of machine updates; ?machine=ID narrows it to
// one machine (the machine page), so a page about one machine does not receive the fleet.
//
// A stream ends when the credential it was opened with no longer holds (a logout, an
// expired session, a deleted token): it is checked before every batch and every ping.
func (h *Handler) events(w http.ResponseWriter, r *http.Request, op operator) {
	only := shared.MachineID(r.URL.Query().Get("machine"))
	if only != "" && only.Validate() != nil {
		http.Error(w, "machine: not a machine id", http.StatusBadRequest)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusInternalServerError)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no")
	c := h.live.join()
	defer h.live.leave(c)
	_, _ = w.Write([]byte("retry: 2000\n: rivet live updates\n\n"))
	flusher.Flush()
	ping := time.NewTicker(keepAlive)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.live.quit:
			return
		case msg := <-c.ch:
			if !h.stillValid(op) {
				return
			}
			raw := msg.raw
			if only != "" {
				if raw = narrow(msg.batch, only); raw == nil {
					continue
				}
			}
			if _, err := w.Write(raw); err != nil {
				return
			}
			if c.slow.Load() {
				_, _ = w.Write(shared.EncodeLiveBatch(shared.LiveBatch{Reload: true}))
				return // the page reloads and reconnects with a fresh view
			}
		case <-ping.C:
			if !h.stillValid(op) {
				return
			}
			if _, err := w.Write([]byte(": ping\n\n")); err != nil {
				return
			}
		}
		flusher.Flush()
	}
}

// narrow encodes the part of a batch about one machine, or nil when it has none.
func narrow(b *shared.LiveBatch, id shared.MachineID) []byte {
	if b.Reload {
		return shared.EncodeLiveBatch(shared.LiveBatch{Counts: b.Counts, Total: b.Total, Reload: true})
	}
	for _, u := range b.Machines {
		if u.ID == id {
			return shared.EncodeLiveBatch(shared.LiveBatch{Counts: b.Counts, Total: b.Total, Machines: []shared.LiveUpdate{u}})
		}
	}
	return nil
}
