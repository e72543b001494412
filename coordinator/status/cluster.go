package status

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"

	"github.com/rivetmetal/rivet/shared"
)

// counterPrefixes are the metric families the cluster page shows as boot-service and
// image-download counters.
var counterPrefixes = []string{"rivet_boot_", "rivet_image_"}

const serfListed = 200

type counterRow struct {
	Name, Labels string
	Value        float64
}

type statusCount struct {
	Status string
	N      int
}

type clusterPage struct {
	page
	Raft        []shared.RaftPeer
	Leader      string
	Applied     uint64
	SerfCounts  []statusCount
	Serf        []shared.SerfMember
	SerfTotal   int
	Counters    []counterRow
	NoCounters  bool
	Coordinator int
}

func (h *Handler) cluster(w http.ResponseWriter, r *http.Request, op operator) {
	mem := h.cfg.Backend.Members()
	p := clusterPage{page: h.pageFor(op, "Cluster", "cluster"), Raft: mem.Raft, Applied: h.store.Applied(),
		SerfTotal: len(mem.Serf)}
	p.Live = false
	for _, peer := range mem.Raft {
		if peer.Leader {
			p.Leader = peer.ID
		}
	}
	byStatus := map[string]int{}
	for _, m := range mem.Serf {
		byStatus[m.Status]++
	}
	for st, n := range byStatus {
		p.SerfCounts = append(p.SerfCounts, statusCount{st, n})
	}
	sort.Slice(p.SerfCounts, func(i, j int) bool { return p.SerfCounts[i].Status < p.SerfCounts[j].Status })
	serf := append([]shared.SerfMember(nil), mem.Serf...)
	sort.Slice(serf, func(i, j int) bool { return serf[i].Name < serf[j].Name })
	p.Serf = serf[:min(len(serf), serfListed)]
	p.Counters = h.counters()
	p.NoCounters = len(p.Counters) == 0
	h.render(w, http.StatusOK, "cluster", p)
}

// counters reads the boot and image counters from the metrics registry, so the page
// shows exactly what Prometheus scrapes.
func (h *Handler) counters() []counterRow {
	if h.cfg.Gatherer == nil {
		return nil
	}
	families, err := h.cfg.Gatherer.Gather()
	if err != nil {
		h.log.Warn("gathering metrics for the cluster page", "err", err)
	}
	var rows []counterRow
	for _, f := range families {
		if !hasAnyPrefix(f.GetName(), counterPrefixes) {
			continue
		}
		for _, m := range f.GetMetric() {
			rows = append(rows, counterRow{Name: f.GetName(), Labels: labelText(m.GetLabel()), Value: metricValue(f, m)})
		}
	}
	return rows
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func labelText(labels []*dto.LabelPair) string {
	parts := make([]string, 0, len(labels))
	for _, l := range labels {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(parts, " ")
}

func metricValue(f *dto.MetricFamily, m *dto.Metric) float64 {
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

type roleRow struct {
	Role     shared.Role
	Selector string
	Disk     string
	Image    string
	Counts   []stateCount
	Matched  int
	Machines []shared.MachineID
}

type unmatchedRow struct {
	ID     shared.MachineID
	Host   string
	Reason string
}

type rolesPage struct {
	page
	Roles     []roleRow
	Unmatched []unmatchedRow
	Waiting   int
}

const roleMachinesListed = 50

func (h *Handler) roles(w http.ResponseWriter, r *http.Request, op operator) {
	p := rolesPage{page: h.pageFor(op, "Roles", "roles")}
	p.Live = false
	byRole := map[string][]*shared.Machine{}
	for _, m := range h.store.MachinesFull() {
		switch {
		case m.Role != "":
			byRole[m.Role] = append(byRole[m.Role], m)
		case m.State == shared.StateDiscovered && m.Unmatched != "":
			p.Unmatched = append(p.Unmatched, unmatchedRow{m.ID, m.Hostname, m.Unmatched})
		case m.State == shared.StateDiscovered:
			p.Waiting++
		}
	}
	for _, role := range h.store.Roles() {
		row := roleRow{Role: role, Selector: compactJSON(role.Selector), Disk: compactJSON(role.InstallDisk),
			Image: redactURL(role.Image.URL)}
		counts := map[shared.State]int{}
		for _, m := range byRole[role.Name] {
			counts[m.State]++
			if len(row.Machines) < roleMachinesListed {
				row.Machines = append(row.Machines, m.ID)
			}
		}
		row.Matched = len(byRole[role.Name])
		for _, st := range shared.States {
			if counts[st] > 0 {
				row.Counts = append(row.Counts, stateCount{st, counts[st]})
			}
		}
		p.Roles = append(p.Roles, row)
	}
	h.render(w, http.StatusOK, "roles", p)
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil || string(b) == "{}" {
		return "(any)"
	}
	return string(b)
}

// redactURL drops credentials an operator may have put in an image URL.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User("REDACTED")
	return u.String()
}
