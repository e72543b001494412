package status

import (
	"html"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/shared"
)

// The fleet page is one tile per machine, coloured by state, with the current step and
// its progress as a bar inside the tile. Tiles are small (about 150 bytes), so even
// 10,000 machines render as one page in well under the 200 ms goal (`rivet-bench
// status`); beyond that the grid is paginated. Filters are query parameters, so a filtered view is a link.

const (
	defaultPerPage = 10000
	maxPerPage     = 20000
	failedListed   = 10
)

type stateCount struct {
	State shared.State
	N     int
}

type tile struct {
	ID    shared.MachineID
	State shared.State
	Title string
	Width int // progress in twentieths (0..20), -1 without progress
}

type failedRow struct {
	ID    shared.MachineID
	Host  string
	Step  string
	Error string
}

type fleetFilter struct {
	State, Role, Domain string
}

type fleetPage struct {
	page
	Counts           []stateCount
	Total            int
	Filter           fleetFilter
	Filtered         bool
	States           []shared.State
	Roles, Domains   []string
	FailureDomain    failureDomain
	Tiles            []tile
	Grid             template.HTML // the tiles, written by gridHTML
	Matched          int
	Page, Pages      int
	PrevURL, NextURL string
	Failed           []failedRow
	MoreFailed       int
}

func (h *Handler) fleet(w http.ResponseWriter, r *http.Request, op operator) {
	q := r.URL.Query()
	f := fleetFilter{State: q.Get("state"), Role: q.Get("role"), Domain: q.Get(h.domain.Param)}
	per := clampInt(q.Get("per"), defaultPerPage, 1, maxPerPage)
	pageNo := clampInt(q.Get("page"), 1, 1, 1<<20)

	all := h.store.Machines()
	counts := map[shared.State]int{}
	roles, domains := map[string]bool{}, map[string]bool{}
	p := fleetPage{page: h.pageFor(op, "Fleet", "fleet"), Total: len(all), Filter: f, States: shared.States,
		Filtered: f != fleetFilter{}, FailureDomain: h.domain}
	matched := make([]shared.MachineSummary, 0, len(all))
	for _, m := range all {
		counts[m.State]++
		if m.Role != "" {
			roles[m.Role] = true
		}
		if domain := m.Labels[h.domain.Label]; domain != "" {
			domains[domain] = true
		}
		if f.matches(m, h.domain) {
			matched = append(matched, m)
		}
		if m.State == shared.StateFailed {
			if len(p.Failed) < failedListed {
				p.Failed = append(p.Failed, failedRow{ID: m.ID, Host: m.Hostname, Step: m.Step, Error: auth.Redact(m.Error)})
			} else {
				p.MoreFailed++
			}
		}
	}
	for _, st := range shared.States {
		p.Counts = append(p.Counts, stateCount{State: st, N: counts[st]})
	}
	p.Roles, p.Domains = slices.Sorted(maps.Keys(roles)), slices.Sorted(maps.Keys(domains))
	p.Matched = len(matched)
	p.Pages = max(1, (len(matched)+per-1)/per)
	pageNo = min(pageNo, p.Pages)
	p.Page = pageNo
	lo, hi := (pageNo-1)*per, min(pageNo*per, len(matched))
	p.Tiles = make([]tile, 0, hi-lo)
	for _, m := range matched[lo:hi] {
		p.Tiles = append(p.Tiles, tileFor(m))
	}
	p.Grid = gridHTML(p.Tiles)
	if pageNo > 1 {
		p.PrevURL = f.url(h.domain, pageNo-1, per)
	}
	if pageNo < p.Pages {
		p.NextURL = f.url(h.domain, pageNo+1, per)
	}
	h.render(w, http.StatusOK, "fleet", p)
}

func (f fleetFilter) matches(m shared.MachineSummary, d failureDomain) bool {
	return (f.State == "" || string(m.State) == f.State) && (f.Role == "" || m.Role == f.Role) &&
		(f.Domain == "" || m.Labels[d.Label] == f.Domain)
}

func (f fleetFilter) url(d failureDomain, pageNo, per int) string {
	v := url.Values{}
	for k, val := range map[string]string{"state": f.State, "role": f.Role, d.Param: f.Domain} {
		if val != "" {
			v.Set(k, val)
		}
	}
	v.Set("page", strconv.Itoa(pageNo))
	if per != defaultPerPage {
		v.Set("per", strconv.Itoa(per))
	}
	return Prefix + "?" + v.Encode()
}

// tileFor is one machine's tile: its hover text names the machine, state and step.
func tileFor(m shared.MachineSummary) tile {
	var b strings.Builder
	b.Grow(96)
	b.WriteString(string(m.ID))
	if m.Hostname != "" {
		b.WriteString(" ")
		b.WriteString(m.Hostname)
	}
	b.WriteString(" · ")
	b.WriteString(string(m.State))
	if m.Step != "" {
		b.WriteString(" · ")
		b.WriteString(m.Step)
	}
	t := tile{ID: m.ID, State: m.State, Width: -1}
	if pct := m.Progress.Percent(); pct >= 0 {
		t.Width = int(pct / 5)
		b.WriteString(" ")
		b.WriteString(strconv.Itoa(int(pct)))
		b.WriteString("%")
		if r := shared.HumanRate(m.Progress.BytesPerSec); r != "" {
			b.WriteString(" ")
			b.WriteString(r)
		}
	}
	t.Title = b.String()
	return t
}

// gridHTML writes the tiles directly: at 10,000 machines, html/template's reflection and
// per-value escaping were three quarters of the page's server time. Every value is
// escaped here as the template would (ids and states are also validated by the store).
//
//	<a id="ID" class="t STATE" href="/status/machines/ID" title="TITLE"><i class="wN"></i></a>
func gridHTML(tiles []tile) template.HTML {
	var b strings.Builder
	b.Grow(len(tiles) * 160)
	for _, t := range tiles {
		id := html.EscapeString(string(t.ID))
		b.WriteString(`<a id="`)
		b.WriteString(id)
		b.WriteString(`" class="t `)
		b.WriteString(html.EscapeString(string(t.State)))
		b.WriteString(`" href="/status/machines/`)
		b.WriteString(url.PathEscape(string(t.ID)))
		b.WriteString(`" title="`)
		b.WriteString(html.EscapeString(t.Title))
		b.WriteString(`">`)
		if t.Width >= 0 {
			b.WriteString(`<i class="w`)
			b.WriteString(strconv.Itoa(t.Width))
			b.WriteString(`"></i>`)
		}
		b.WriteString(`</a>`)
	}
	return template.HTML(b.String()) // #nosec: built from escaped values only
}

func clampInt(s string, def, lo, hi int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return min(max(n, lo), hi)
}
