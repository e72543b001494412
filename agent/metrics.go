package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rivetmetal/rivet/shared"
)

type metrics struct {
	registrations *prometheus.CounterVec
	checkins      *prometheus.CounterVec
	polls         *prometheus.CounterVec
	stepSeconds   *prometheus.HistogramVec
	members       *prometheus.GaugeVec
	registry      *prometheus.Registry
}

func newMetrics(reg *prometheus.Registry, mode shared.AgentMode) *metrics {
	m := &metrics{
		registry: reg,
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rivet_agent_registrations_total", Help: "Registration attempts by result.",
		}, []string{"result"}),
		checkins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rivet_agent_checkins_total", Help: "Check-ins with the coordinator by result.",
		}, []string{"result"}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rivet_agent_plan_polls_total", Help: "Plan polls by what triggered them (interval, nudge, work, ...).",
		}, []string{"trigger"}),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rivet_agent_step_duration_seconds", Help: "Duration of step attempts by step and result.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 14), // 0.5s .. ~68min
		}, []string{"step", "status"}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rivet_agent_serf_members", Help: "Gossip pool members seen by this agent, by status.",
		}, []string{"status"}),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rivet_agent_info", Help: "The agent's version and mode.",
		ConstLabels: prometheus.Labels{"version": shared.Version, "mode": string(mode)},
	})
	info.Set(1)
	for _, c := range []prometheus.Collector{m.registrations, m.checkins, m.polls, m.stepSeconds, m.members, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		// A registry shared with another agent (tests) already has them: keep the first.
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &are) {
			panic(err)
		}
	}
	return m
}

// serveMetrics serves /metrics on addr until stop is called, and returns the address
// it listens on. A listener that cannot bind is logged, not fatal: metrics are not worth
// stopping provisioning for.
func (a *Agent) serveMetrics(addr string) (bound string, stop func()) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		a.log.Warn("metrics listener not started", "addr", addr, "err", err)
		return "", func() {}
	}
	mux := http.NewServeMux()
	mux.Handle(shared.PathMetrics, promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	a.log.Info("metrics listening", "addr", ln.Addr().String())
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
}
