package powerctl

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/shared"
)

// Metrics are the power commands' Prometheus series.
type Metrics struct {
	commands *prometheus.CounterVec   // by action and result
	latency  *prometheus.HistogramVec // by driver and action
}

// NewMetrics registers the power series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rivet_power_commands_total",
			Help: "Power commands sent to BMCs, by action and result (ok, unreachable, auth, refused, no_bmc, error).",
		}, []string{"action", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rivet_power_bmc_seconds",
			Help:    "How long a power command took at the BMC (PXE-once, the action and the status read), by driver and action.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14), // 10 ms to about 80 s
		}, []string{"driver", "action"}),
	}
	reg.MustRegister(m.commands, m.latency)
	return m
}

// Result is the result label of a command's error.
func Result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNoBMC):
		return "no_bmc"
	case errors.Is(err, power.ErrBMCUnreachable):
		return "unreachable"
	case errors.Is(err, power.ErrBMCAuth):
		return "auth"
	case errors.Is(err, power.ErrBMCCommand):
		return "refused"
	}
	return "error"
}

func (m *Metrics) observe(driver shared.BMCDriver, action shared.PowerAction, err error, took time.Duration) {
	if m == nil {
		return
	}
	m.commands.WithLabelValues(string(action), Result(err)).Inc()
	if driver != "" {
		m.latency.WithLabelValues(string(driver), string(action)).Observe(took.Seconds())
	}
}
