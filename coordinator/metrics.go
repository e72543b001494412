package coordinator

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rivetmetal/rivet/coordinator/netboot"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"

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
	}
	reg.MustRegister(m.applySeconds, m.changes, &stateCollector{s: s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) machineChanged() { m.changes.Inc() }

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
	m.reg.MustRegister(m.tftp, m.tftpBytes, m.dhcp)
	nb.TFTPTransfer = func(file, _ string, bytes int64, _ time.Duration, err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.tftp.WithLabelValues(file, result).Inc()
		m.tftpBytes.Add(float64(bytes))
	}
	nb.DHCPEvent = func(e dhcp.Event) {
		if e.Kind != dhcp.EventRequest {
			m.dhcp.WithLabelValues(e.Arch.String(), string(e.Kind)).Inc()
		}
	}
}
