package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/coordinator/powerctl"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// PowerOptions configure power commands and the leader's power recovery.
type PowerOptions struct {
	// Recover: --power-recover-after and --power-recover-attempts (After 0: off).
	Recover powerctl.RecoverPolicy
	// Timeout bounds one power command (0: powerctl.DefaultTimeout).
	Timeout time.Duration
	// Drivers builds a BMC's driver; nil: IPMI and Redfish with DriverOptions. Tests give
	// fake BMCs.
	Drivers       func(shared.BMC) (power.Driver, error)
	DriverOptions powerctl.DriverOptions
	// Resolver finds power targets; nil: the replicated state's machines and expected rows.
	Resolver powerctl.Resolver
}

// recoverEvery spaces the leader's recovery passes (each reads the whole fleet).
const recoverEvery = 10 * time.Second

// powerManager is this coordinator's power manager, over the replicated state.
func (s *Server) powerManager(po PowerOptions) *powerctl.Manager {
	res := po.Resolver
	if res == nil {
		res = storeTargets{s.store}
	}
	var metrics *powerctl.Metrics
	if s.cfg.Registry != nil {
		metrics = powerctl.NewMetrics(s.cfg.Registry)
	}
	return &powerctl.Manager{Resolver: res, Applier: s, Drivers: po.Drivers, DriverOptions: po.DriverOptions, Timeout: po.Timeout,
		Metrics: metrics, Log: s.log.With("component", "power")}
}

// runPowerRecovery runs the recovery passes while this coordinator leads, until ctx ends.
func (s *Server) runPowerRecovery(ctx context.Context, m *powerctl.Manager, p powerctl.RecoverPolicy) {
	t := time.NewTicker(recoverEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.IsLeader() && s.store.Cluster().Initialised() {
			m.RecoverPass(ctx, s.store, p)
		}
	}
}

// storeTargets resolves power targets from the replicated state (state.Store's power
// view): machine records, and expected rows no machine has matched yet, each with its
// row's BMC opened from the sealed copy.
type storeTargets struct{ store *state.Store }

func (st storeTargets) PowerTarget(ref string) (powerctl.Target, error) {
	t, err := st.store.PowerTarget(ref)
	var rej *state.Rejected
	switch {
	case err == nil:
	case errors.As(err, &rej) && rej.Rule == state.RuleNoBMC:
		// The manager says what to do about a missing BMC, with the target's name.
	case errors.As(err, &rej) && rej.Kind == state.KindNotFound:
		return powerctl.Target{}, fmt.Errorf("%q: %w", ref, powerctl.ErrUnknownTarget)
	default:
		return powerctl.Target{}, err
	}
	return fromState(t), nil
}

func (st storeTargets) PowerTargets(selector map[string]string, all bool) ([]powerctl.Target, error) {
	var out []powerctl.Target
	for _, t := range st.store.PowerTargets(selector) {
		if t.State == shared.StateRetired && !all {
			continue
		}
		out = append(out, fromState(t))
	}
	return out, nil
}

func fromState(t state.PowerTarget) powerctl.Target {
	return powerctl.Target{MachineID: t.MachineID, Key: t.Key, Hostname: t.Hostname, Labels: t.Labels,
		State: t.State, BMC: t.BMC}
}
