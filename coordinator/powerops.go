package coordinator

import (
	"context"
	"fmt"
	"maps"
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

// storeTargets resolves power targets from the replicated state: machine records, and
// expected rows no machine has matched yet. A machine's BMC is its expected row's.
type storeTargets struct{ store *state.Store }

func (st storeTargets) PowerTarget(ref string) (powerctl.Target, error) {
	ts := st.all()
	for _, match := range []func(powerctl.Target) bool{
		func(t powerctl.Target) bool { return string(t.MachineID) == ref },
		func(t powerctl.Target) bool { return t.Key == ref },
		func(t powerctl.Target) bool { return t.Hostname == ref },
	} {
		for _, t := range ts {
			if match(t) {
				return t, nil
			}
		}
	}
	return powerctl.Target{}, fmt.Errorf("%q: %w", ref, powerctl.ErrUnknownTarget)
}

func (st storeTargets) PowerTargets(selector map[string]string, all bool) ([]powerctl.Target, error) {
	var out []powerctl.Target
	for _, t := range st.all() {
		if t.State == shared.StateRetired && !all {
			continue
		}
		if labelsMatch(t.Labels, selector) {
			out = append(out, t)
		}
	}
	return out, nil
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// all lists every target: machines first (by ID), then the expected rows no machine has
// matched (by key).
func (st storeTargets) all() []powerctl.Target {
	rows := st.store.Expected()
	byMachine := map[shared.MachineID]*shared.ExpectedMachine{}
	for i := range rows {
		if rows[i].MachineID != "" {
			byMachine[rows[i].MachineID] = &rows[i]
		}
	}
	var out []powerctl.Target
	for _, m := range st.store.Machines() {
		t := powerctl.Target{MachineID: m.ID, Hostname: m.Hostname, Labels: maps.Clone(m.Labels), State: m.State}
		if row := byMachine[m.ID]; row != nil {
			t.Key = row.Key()
			t.BMC = rowBMC(row)
		}
		out = append(out, t)
	}
	for i := range rows {
		if rows[i].MachineID == "" {
			out = append(out, powerctl.Target{Key: rows[i].Key(), Hostname: rows[i].Hostname,
				Labels: maps.Clone(rows[i].Labels), BMC: rowBMC(&rows[i])})
		}
	}
	return out
}

// rowBMC is an expected row's BMC with its password in clear.
//
// MERGE(lead): once the import seals BMC passwords, this is where the clear one comes
// from (the store's opened copy of the row's sealed password).
func rowBMC(row *shared.ExpectedMachine) shared.BMC {
	if row.BMC == nil {
		return shared.BMC{}
	}
	return *row.BMC
}
