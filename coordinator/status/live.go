package status

import (
	"bytes"
	"context"
	"encoding/json"
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

// Update is one machine's new look, as the pages and `rivet machines watch` read it.
type Update struct {
	ID       shared.MachineID `json:"id"`
	State    shared.State     `json:"state"`
	Role     string           `json:"role,omitempty"`
	Rack     string           `json:"rack,omitempty"`
	Hostname string           `json:"hostname,omitempty"`
	Step     string           `json:"step,omitempty"`
	Percent  float64          `json:"pct"` // -1 when unknown
	Rate     float64          `json:"rate,omitempty"`
	Title    string           `json:"title"`
	Width    int              `json:"w"` // tile bar width in twentieths, -1 none
	Error    string           `json:"error,omitempty"`
	Gone     bool             `json:"gone,omitempty"`
}

// Batch is one event of the stream: the machines that changed and the new counts.
type Batch struct {
	Counts   map[shared.State]int `json:"counts"`
	Total    int                  `json:"total"`
	Machines []Update             `json:"machines"`
	Reload   bool                 `json:"reload,omitempty"` // too much changed: reload the page
}

// message is one batch, encoded once for every client that takes all of it.
type message struct {
	raw   []byte
	batch *Batch
}

type client struct {
	ch   chan message
	slow atomic.Bool // missed a batch: must reload
}

type hub struct {
	store    *state.Store
	interval time.Duration

	mu      sync.Mutex
	clients map[*client]struct{}
	stop    context.CancelFunc // ends the running loop; nil when idle
	done    chan struct{}
	quit    chan struct{} // closed by Close: every stream ends
	closed  bool
}

func newHub(store *state.Store, interval time.Duration) *hub {
	return &hub{store: store, interval: interval, clients: map[*client]struct{}{}, quit: make(chan struct{})}
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
		h.broadcast(message{raw: encodeEvent(b), batch: &b})
	}
}

// batch builds the update for the changed machines. A restored snapshot, or more changes
// than pages would want to patch one by one, asks the pages to reload instead.
func (h *hub) batch(ids []shared.MachineID, all bool) Batch {
	counts := h.store.CountByState()
	b := Batch{Counts: counts}
	for _, n := range counts {
		b.Total += n
	}
	if all {
		b.Reload = true
		return b
	}
	b.Machines = make([]Update, 0, len(ids))
	for _, id := range ids {
		m, ok := h.store.Machine(id)
		if !ok {
			b.Machines = append(b.Machines, Update{ID: id, Gone: true})
			continue
		}
		b.Machines = append(b.Machines, updateFor(m.Summary()))
	}
	return b
}

func updateFor(m shared.MachineSummary) Update {
	t := tileFor(m)
	u := Update{ID: m.ID, State: m.State, Role: m.Role, Rack: m.Labels[rackLabel], Hostname: m.Hostname,
		Step: m.Step, Percent: m.Progress.Percent(), Title: t.Title, Width: t.Width, Error: auth.Redact(m.Error)}
	if m.Progress != nil {
		u.Rate = m.Progress.BytesPerSec
	}
	return u
}

func encodeEvent(b Batch) []byte {
	var buf bytes.Buffer
	buf.WriteString("event: machines\ndata: ")
	_ = json.NewEncoder(&buf).Encode(b) // ends with the newline that ends the data line
	buf.WriteString("\n")
	return buf.Bytes()
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
				_, _ = w.Write(encodeEvent(Batch{Reload: true}))
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
func narrow(b *Batch, id shared.MachineID) []byte {
	if b.Reload {
		return encodeEvent(Batch{Counts: b.Counts, Total: b.Total, Reload: true})
	}
	for _, u := range b.Machines {
		if u.ID == id {
			return encodeEvent(Batch{Counts: b.Counts, Total: b.Total, Machines: []Update{u}})
		}
	}
	return nil
}
