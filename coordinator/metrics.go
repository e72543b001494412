package coordinator

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rivetmetal/rivet/coordinator/netboot"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"
	"github.com/rivetmetal/rivet/coordinator/state"

	"github.com/rivetmetal/rivet/shared"
)

// metrics are the coordinator's own Prometheus series; the API, boot services and
// gossip register theirs on the same registry.
type metrics struct {
	reg          *prometheus.Registry
	applySeconds prometheus.Histogram
	changes      prometheus.Counter
	tftp, dhcp   *prometheus.CounterVec
	tftpBytes    prometheus.Counter
	bootRequests *prometheus.CounterVec   // by service, file and client architecture
	stepSeconds  *prometheus.HistogramVec // by step kind and result
	imageBytes   prometheus.Counter
	imageReqs    *prometheus.CounterVec
	linkRefusals *prometheus.CounterVec // by reason
	started      time.Time
}

func newMetrics(reg *prometheus.Registry, s *Server) *metrics {
	m := &metrics{
		reg: reg,
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rivet_raft_commit_seconds",
			Help:    "Time from proposing a command on the leader to its commit and apply.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rivet_machine_changes_total",
			Help: "Machine records changed by applied commands.",
		}),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rivet_step_duration_seconds",
			Help:    "How long plan steps took, from their first running report to their result, by step kind and result.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 14), // 0.25 s to about 34 min
		}, []string{"kind", "result"}),
		imageBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "rivet_image_bytes_served_total",
			Help: "OS image bytes sent by this coordinator's API (/v1/images/)."}),
		imageReqs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_image_requests_total",
			Help: "OS image requests by HTTP status (206 is a resumed or ranged download)."}, []string{"code"}),
		linkRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_link_refused_total",
			Help: "Coordinator links refused: Raft handshakes (reason certificate, not a member, handshake) and API coordinator calls (api)."},
			[]string{"reason"}),
		started: time.Now(),
	}
	reg.MustRegister(m.applySeconds, m.changes, m.stepSeconds, m.imageBytes, m.imageReqs, m.linkRefusals, &stateCollector{s: s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) machineChanged() { m.changes.Inc() }

func (m *metrics) linkRefused(reason string) { m.linkRefusals.WithLabelValues(reason).Inc() }

// stateCollector reads gauges from the store and Raft at scrape time.
type stateCollector struct{ s *Server }

var (
	machinesDesc = prometheus.NewDesc("rivet_machines", "Machines by lifecycle state.", []string{"state"}, nil)
	leaderDesc   = prometheus.NewDesc("rivet_raft_leader", "1 if this coordinator is the Raft leader.", nil, nil)
	appliedDesc  = prometheus.NewDesc("rivet_raft_applied_index", "Last Raft index applied to the state.", nil, nil)
	serfDesc     = prometheus.NewDesc("rivet_serf_members", "Gossip pool members by status.", []string{"status"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- machinesDesc
	ch <- leaderDesc
	ch <- appliedDesc
	ch <- serfDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.s.store.CountByState()
	for _, st := range shared.States {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(counts[st]), string(st))
	}
	leader := 0.0
	if c.s.raft.State() == raft.Leader {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(leaderDesc, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(appliedDesc, prometheus.GaugeValue, float64(c.s.store.Applied()))
	if p := c.s.pool(); p != nil {
		byStatus := map[string]int{}
		for _, m := range p.Members() {
			byStatus[m.Status]++
		}
		for st, n := range byStatus {
			ch <- prometheus.MustNewConstMetric(serfDesc, prometheus.GaugeValue, float64(n), st)
		}
	}
}

// wireNetboot counts boot requests by file and client architecture.
func (m *metrics) wireNetboot(nb *netboot.Config) {
	m.tftp = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_boot_tftp_transfers_total",
		Help: "TFTP transfers by file and result."}, []string{"file", "result"})
	m.tftpBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "rivet_boot_tftp_bytes_total",
		Help: "Bytes sent over TFTP."})
	m.dhcp = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_boot_dhcp_requests_total",
		Help: "DHCP requests by client architecture and outcome."}, []string{"arch", "outcome"})
	m.bootRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_boot_requests_total",
		Help: "Boot requests answered, by service (dhcp, tftp), boot file and client architecture."},
		[]string{"service", "file", "arch"})
	m.reg.MustRegister(m.tftp, m.tftpBytes, m.dhcp, m.bootRequests)
	files := bootFilesByArch(nb.BootFiles)
	nb.TFTPTransfer = func(file, _ string, bytes int64, _ time.Duration, err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.tftp.WithLabelValues(file, result).Inc()
		m.tftpBytes.Add(float64(bytes))
		arch := "unknown"
		for a, f := range files {
			if f == file {
				arch = a.String()
			}
		}
		m.bootRequests.WithLabelValues("tftp", file, arch).Inc()
	}
	nb.DHCPEvent = func(e dhcp.Event) {
		if e.Kind != dhcp.EventRequest {
			m.dhcp.WithLabelValues(e.Arch.String(), string(e.Kind)).Inc()
		}
		if e.Kind == dhcp.EventReply {
			m.bootRequests.WithLabelValues("dhcp", files[e.Arch], e.Arch.String()).Inc()
		}
	}
}

// bootFilesByArch is the iPXE binary each firmware is sent to, with the boot services'
// defaults filled in, so TFTP downloads can be counted by architecture.
func bootFilesByArch(f dhcp.BootFiles) map[dhcp.Arch]string {
	return map[dhcp.Arch]string{
		dhcp.ArchBIOS:     orDefault(f.BIOS, "undionly.kpxe"),
		dhcp.ArchEFIx64:   orDefault(f.EFIx64, "snponly.efi"),
		dhcp.ArchEFIArm64: orDefault(f.EFIArm64, "snponly-arm64.efi"),
	}
}

// countImages counts the OS image bytes the API sends, by wrapping the response writer of
// image requests only (other routes keep their writer, and with it streaming).
func (m *metrics) countImages(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, shared.PathImages) {
			next.ServeHTTP(w, r)
			return
		}
		cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(cw, r)
		m.imageBytes.Add(float64(cw.n))
		m.imageReqs.WithLabelValues(strconv.Itoa(cw.status)).Inc()
	})
}

type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// observeSteps feeds the step-duration histogram from the store: whenever a machine
// changes, each step that has newly finished is observed once. Steps that finished
// before this coordinator started are not counted again when it replays its log.
func (m *metrics) observeSteps(ctx context.Context, store *state.Store) {
	sub := store.Subscribe()
	defer sub.Close()
	seen := map[shared.MachineID]map[string]time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.Ready():
		}
		ids, _ := sub.Take()
		for _, id := range ids {
			if mach, ok := store.Machine(id); ok {
				m.observeMachine(mach, seen)
			} else {
				delete(seen, id)
			}
		}
	}
}

func (m *metrics) observeMachine(mach *shared.Machine, seen map[shared.MachineID]map[string]time.Time) {
	if mach.Plan == nil {
		return
	}
	for i, st := range mach.Steps {
		finished := st.Status == shared.StepSucceeded || st.Status == shared.StepFailed
		if !finished || st.StartedAt.IsZero() || st.FinishedAt.Before(m.started) || i >= len(mach.Plan.Steps) {
			continue
		}
		if seen[mach.ID] == nil {
			seen[mach.ID] = map[string]time.Time{}
		}
		if seen[mach.ID][st.Name].Equal(st.FinishedAt) {
			continue
		}
		seen[mach.ID][st.Name] = st.FinishedAt
		m.stepSeconds.WithLabelValues(string(mach.Plan.Steps[i].Kind), string(st.Status)).
			Observe(st.FinishedAt.Sub(st.StartedAt).Seconds())
	}
}
