package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/shared"
)

// `rivet machines watch` follows the fleet live until it settles. It listens to the
// status pages' event stream (coalesced to one update per machine per second) and falls
// back to polling the machine list when the stream is not there. On a terminal it redraws
// a table in place; otherwise it prints one line per change, or JSON lines.

type watchRow struct {
	ID       shared.MachineID `json:"id"`
	Hostname string           `json:"hostname,omitempty"`
	State    shared.State     `json:"state"`
	Role     string           `json:"role,omitempty"`
	Step     string           `json:"step,omitempty"`
	Percent  float64          `json:"pct"` // -1 when unknown
	Rate     float64          `json:"rate,omitempty"`
	Error    string           `json:"error,omitempty"`
}

func rowFromSummary(m shared.MachineSummary) watchRow {
	r := watchRow{ID: m.ID, Hostname: m.Hostname, State: m.State, Role: m.Role, Step: m.Step,
		Percent: m.Progress.Percent(), Error: m.Error}
	if m.Progress != nil {
		r.Rate = m.Progress.BytesPerSec
	}
	return r
}

func rowFromUpdate(u shared.LiveUpdate) watchRow {
	return watchRow{ID: u.ID, Hostname: u.Hostname, State: u.State, Role: u.Role, Step: u.Step,
		Percent: u.Percent, Rate: u.Rate, Error: u.Error}
}

// same reports whether two rows would print the same (progress compared in whole percent).
func (r watchRow) same(o watchRow) bool {
	return r.State == o.State && r.Hostname == o.Hostname && r.Step == o.Step && int(r.Percent) == int(o.Percent) && r.Error == o.Error
}

// transitional states are those in which a machine moves on by itself.
func transitional(s shared.State) bool {
	switch s {
	case shared.StateDiscovered, shared.StatePlanned, shared.StateProvisioning, shared.StateInstalled, shared.StateJoining:
		return true
	}
	return false
}

type watcher struct {
	env      *Env
	c        *shared.Client
	json     bool
	tty      bool
	height   int
	filter   func(watchRow) bool
	min      int // machines to see before the fleet can be settled
	rows     map[shared.MachineID]watchRow
	unplaced map[shared.MachineID]bool // discovered machines no role matches: settled
}

func machinesWatch(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "machines watch", "rivet machines watch [--state STATE] [--role ROLE] [--min N] [--interval 2s] [--output json]")
	stateFilter := v.fs.String("state", "", "only machines in this state")
	roleFilter := v.fs.String("role", "", "only machines with this role")
	interval := v.fs.Duration("interval", 2*time.Second, "how often to poll when the live stream is not available")
	minMachines := v.fs.Int("min", 1, "do not call the fleet settled before this many machines are known (e.g. the lab's VM count)")
	if err := v.parse(args); err != nil {
		return err
	}
	c, err := v.client()
	if err != nil {
		return err
	}
	w := &watcher{env: env, c: c, json: v.json(), rows: map[shared.MachineID]watchRow{}, min: *minMachines,
		unplaced: map[shared.MachineID]bool{},
		filter: func(r watchRow) bool {
			return (*stateFilter == "" || string(r.State) == *stateFilter) && (*roleFilter == "" || r.Role == *roleFilter)
		}}
	w.tty, w.height = terminal(env.Stdout)
	return w.run(ctx, *interval)
}

// terminal reports whether w is a terminal, and its height in rows.
func terminal(w io.Writer) (bool, int) {
	f, ok := w.(*os.File)
	if !ok {
		return false, 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return false, 0
	}
	return true, max(int(ws.Row), 10)
}

func (w *watcher) run(ctx context.Context, interval time.Duration) error {
	// Listen first, then list: a change between the two is not lost.
	events := w.stream(ctx)
	if err := w.refetch(ctx); err != nil {
		return err
	}
	poll := time.NewTicker(interval)
	defer poll.Stop()
	for {
		if w.settled(ctx) {
			return w.finish()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case b, ok := <-events:
			if !ok {
				events = nil // the stream ended: poll from now on
				continue
			}
			if b.Reload {
				if err := w.refetch(ctx); err != nil {
					return err
				}
				continue
			}
			for _, u := range b.Machines {
				if u.Gone {
					delete(w.rows, u.ID)
					continue
				}
				w.update(rowFromUpdate(u))
			}
			w.redraw()
		case <-poll.C:
			if events == nil {
				if err := w.refetch(ctx); err != nil {
					return err
				}
			}
		}
	}
}

// stream opens the live event stream; the channel closes when it ends or was never there.
func (w *watcher) stream(ctx context.Context) <-chan shared.LiveBatch {
	out := make(chan shared.LiveBatch, 16)
	resp, err := w.c.Open(ctx, shared.PathLiveEvents, nil)
	if err != nil {
		close(out)
		return out
	}
	go func() {
		defer close(out)
		defer resp.Body.Close()
		_ = shared.ReadLiveEvents(resp.Body, func(b shared.LiveBatch) bool {
			select {
			case out <- b:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	return out
}

func (w *watcher) refetch(ctx context.Context) error {
	all, err := w.c.Machines(ctx)
	if err != nil {
		return err
	}
	seen := map[shared.MachineID]bool{}
	for _, m := range all {
		seen[m.ID] = true
		w.update(rowFromSummary(m))
	}
	for id := range w.rows {
		if !seen[id] {
			delete(w.rows, id)
		}
	}
	w.redraw()
	return nil
}

// update records a row; without a terminal, a changed row is printed at once.
func (w *watcher) update(r watchRow) {
	if !w.filter(r) {
		delete(w.rows, r.ID)
		return
	}
	old, had := w.rows[r.ID]
	w.rows[r.ID] = r
	if r.State != shared.StateDiscovered {
		delete(w.unplaced, r.ID)
	}
	if had && old.same(r) {
		return
	}
	switch {
	case w.json:
		_ = json.NewEncoder(w.env.Stdout).Encode(struct {
			Time time.Time `json:"time"`
			watchRow
		}{time.Now().UTC(), r})
	case !w.tty:
		fmt.Fprintf(w.env.Stdout, "%s  %s  %-12s %-8s %s\n", time.Now().Format("15:04:05"), r.ID, r.State,
			orDash(r.Step), strings.TrimSpace(bar(r.Percent, 0)+" "+shared.HumanRate(r.Rate)))
	}
}

// settled reports whether no machine moves on by itself: none is transitional, except
// discovered machines that no role matches (they wait for an operator).
func (w *watcher) settled(ctx context.Context) bool {
	if len(w.rows) < w.min {
		return false
	}
	var discovered []shared.MachineID
	for id, r := range w.rows {
		if r.State == shared.StateDiscovered {
			if !w.unplaced[id] {
				discovered = append(discovered, id)
			}
			continue
		}
		if transitional(r.State) {
			return false
		}
	}
	if len(discovered) > 50 {
		return false // the planner has not run over them yet
	}
	for _, id := range discovered {
		m, err := w.c.Machine(ctx, id)
		if err != nil || m.Unmatched == "" || m.State != shared.StateDiscovered {
			return false
		}
		w.unplaced[id] = true
	}
	return true
}

func (w *watcher) counts() map[shared.State]int {
	counts := map[shared.State]int{}
	for _, r := range w.rows {
		counts[r.State]++
	}
	return counts
}

func countsText(counts map[shared.State]int) string {
	var parts []string
	for _, st := range shared.States {
		if counts[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[st], st))
		}
	}
	if len(parts) == 0 {
		return "no machines"
	}
	return strings.Join(parts, ", ")
}

func (w *watcher) finish() error {
	counts := w.counts()
	switch {
	case w.json:
		_ = json.NewEncoder(w.env.Stdout).Encode(map[string]any{"settled": true, "counts": counts})
	default:
		w.redraw()
		fmt.Fprintf(w.env.Stdout, "Fleet settled: %s.\n", countsText(counts))
	}
	if n := counts[shared.StateFailed]; n > 0 {
		return fmt.Errorf("%d machines failed: see `rivet machines ls --state failed` and retry with `rivet machines retry ID`", n)
	}
	return nil
}

// redraw draws the table in place on a terminal: moving machines first, then failed,
// then the rest, as many as fit.
func (w *watcher) redraw() {
	if !w.tty || w.json {
		return
	}
	rows := make([]watchRow, 0, len(w.rows))
	for _, r := range w.rows {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		ri, rj := watchRank(rows[i].State), watchRank(rows[j].State)
		if ri != rj {
			return ri < rj
		}
		return rows[i].ID < rows[j].ID
	})
	fit := max(w.height-5, 1)
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J") // home, clear screen
	fmt.Fprintf(&b, "rivet machines watch — %s — %s\n\n", time.Now().Format("15:04:05"), countsText(w.counts()))
	table(&b, []string{"ID", "HOSTNAME", "STATE", "STEP", "PROGRESS", "RATE", "ERROR"}, tableRows(rows[:min(fit, len(rows))]))
	if len(rows) > fit {
		fmt.Fprintf(&b, "… and %d more\n", len(rows)-fit)
	}
	fmt.Fprint(w.env.Stdout, b.String())
}

func tableRows(rows []watchRow) [][]string {
	out := make([][]string, 0, len(rows))
	for _, r := range rows {
		progress, rate := bar(r.Percent, 20), shared.HumanRate(r.Rate)
		if !transitional(r.State) {
			progress, rate = "", "" // a stopped step's last progress would read as live
		}
		out = append(out, []string{string(r.ID), orDash(r.Hostname), string(r.State), orDash(r.Step),
			orDash(progress), orDash(rate), orDash(truncate(r.Error, 50))})
	}
	return out
}

func watchRank(s shared.State) int {
	switch {
	case transitional(s):
		return 0
	case s == shared.StateFailed:
		return 1
	}
	return 2
}

// bar draws progress as [#####-----] 50%; width 0 gives only the percentage.
func bar(pct float64, width int) string {
	if pct < 0 {
		return ""
	}
	pct = min(pct, 100)
	if width == 0 {
		return fmt.Sprintf("%.0f%%", pct)
	}
	filled := int(pct / 100 * float64(width))
	return "[" + strings.Repeat("#", filled) + strings.Repeat("-", width-filled) + fmt.Sprintf("] %3.0f%%", pct)
}
