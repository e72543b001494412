package coordinator

import (
	"context"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rivetmetal/rivet/coordinator/netboot"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"
	"github.com/rivetmetal/rivet/coordinator/netboot/tftp"
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
	// ticketsIssued counts boot tickets put in iPXE scripts (tickets.go).
	ticketsIssued prometheus.Counter
	linkRefusals  *prometheus.CounterVec // by reason
	started       time.Time
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
		ticketsIssued: prometheus.NewCounter(prometheus.CounterOpts{Name: "rivet_boot_tickets_issued_total",
			Help: "One-time boot tickets issued to expected MACs in iPXE scripts."}),
		linkRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_link_refused_total",
			Help: "Coordinator links refused: Raft handshakes (reason certificate, not a member, handshake) and API coordinator calls (api)."},
			[]string{"reason"}),
		started: time.Now(),
	}
	reg.MustRegister(m.applySeconds, m.changes, m.stepSeconds, m.imageBytes, m.imageReqs, m.ticketsIssued, m.linkRefusals, &stateCollector{s: s},
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

// wireNetboot counts boot requests by file class and client architecture. No label
// value ever comes from a packet as it is: a client picks its TFTP file name, and
// every distinct name would be a series kept forever (and a name that is not UTF-8
// makes the Prometheus client panic). Labels are drawn from fixed sets only.
func (m *metrics) wireNetboot(nb *netboot.Config) {
	m.tftp = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_boot_tftp_transfers_total",
		Help: "TFTP transfers by file class (ipxe-bios, ipxe-efi, kernel, initramfs, script, image, other) and result."},
		[]string{"file", "result"})
	m.tftpBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "rivet_boot_tftp_bytes_total",
		Help: "Bytes sent over TFTP."})
	m.dhcp = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_boot_dhcp_requests_total",
		Help: "DHCP requests by client architecture and outcome."}, []string{"arch", "outcome"})
	m.bootRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_boot_requests_total",
		Help: "Boot requests answered, by service (dhcp, tftp), boot file class and client architecture."},
		[]string{"service", "file", "arch"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_boot_dropped_total",
		Help: "Datagrams the boot services dropped unanswered, by service (dhcp, tftp) and reason (rate_limited: over the per-source limit)."},
		[]string{"service", "reason"})
	tickets := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rivet_boot_tickets_total",
		Help: "Agent boot scripts by ticket outcome: issued, or why not (not_expected: no recent PXE exchange from the MAC; wrong_requester: asked from another address; issue_failed)."},
		[]string{"outcome"})
	m.reg.MustRegister(m.tftp, m.tftpBytes, m.dhcp, m.bootRequests, dropped, tickets)
	files := bootFilesByArch(nb.BootFiles)
	classOf := fileClasses(nb)
	nb.TFTPTransfer = func(file, _ string, bytes int64, _ time.Duration, err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		class := classOf(file)
		m.tftp.WithLabelValues(class, result).Inc()
		m.tftpBytes.Add(float64(bytes))
		arch := "unknown"
		for a, f := range files {
			if f == file {
				arch = a.String()
			}
		}
		m.bootRequests.WithLabelValues("tftp", class, arch).Inc()
	}
	nb.DHCPEvent = func(e dhcp.Event) {
		arch := oneOf(e.Arch.String(), archNames...)
		switch e.Kind {
		case dhcp.EventReply:
			m.dhcp.WithLabelValues(arch, string(dhcp.EventReply)).Inc()
			m.bootRequests.WithLabelValues("dhcp", classOf(files[e.Arch]), arch).Inc()
		case dhcp.EventIgnored, dhcp.EventMalformed:
			m.dhcp.WithLabelValues(arch, string(e.Kind)).Inc()
		}
	}
	nb.Dropped = func(service, reason string) {
		dropped.WithLabelValues(oneOf(service, "dhcp", "tftp"), oneOf(reason, dhcp.ReasonRateLimited, tftp.ReasonRateLimited)).Inc()
	}
	nb.TicketEvent = func(outcome string) {
		tickets.WithLabelValues(oneOf(outcome, netboot.TicketIssued, netboot.TicketNotExpected,
			netboot.TicketWrongRequester, netboot.TicketIssueFailed)).Inc()
	}
}

// Boot file classes, the values of the file label.
const (
	classIPXEBIOS  = "ipxe-bios"
	classIPXEEFI   = "ipxe-efi"
	classKernel    = "kernel"
	classInitramfs = "initramfs"
	classScript    = "script"
	classImage     = "image"
	classOther     = "other"
)

// fileClasses returns what kind of boot file a requested name is, by the names the boot
// services are configured with. Anything else a client asks for is "other".
func fileClasses(nb *netboot.Config) func(name string) string {
	byName := map[string]string{
		orDefault(nb.Kernel, "vmlinuz"):    classKernel,
		orDefault(nb.Initrd, "initrd.zst"): classInitramfs,
	}
	for arch, f := range bootFilesByArch(nb.BootFiles) {
		byName[f] = classIPXEEFI
		if arch == dhcp.ArchBIOS {
			byName[f] = classIPXEBIOS
		}
	}
	return func(name string) string {
		if c, ok := byName[name]; ok {
			return c
		}
		switch path.Ext(name) {
		case ".ipxe":
			return classScript
		case ".img", ".raw", ".iso":
			return classImage
		}
		return classOther
	}
}

// archNames are the values of the arch label.
var archNames = func() []string {
	var names []string
	for _, a := range dhcp.Archs() {
		names = append(names, a.String())
	}
	return names
}()

// oneOf returns v if it is one of allowed, else "other": a label's values stay a fixed set
// even if a boot service one day passes something new.
func oneOf(v string, allowed ...string) string {
	if slices.Contains(allowed, v) {
		return v
	}
	return classOther
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
