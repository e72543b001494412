package powerctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// RecoverPolicy is how the leader recovers a machine that does not check in after a
// reboot: a power cycle with PXE once when After has passed since the reboot (or since
// the last cycle), at most Attempts cycles, then the machine fails with the reason.
type RecoverPolicy struct {
	After    time.Duration // --power-recover-after; 0: no recovery
	Attempts int           // --power-recover-attempts
}

// Defaults of the recovery policy.
const (
	DefaultRecoverAfter    = 10 * time.Minute
	DefaultRecoverAttempts = 2
)

// Act is what the leader does about one machine.
type Act int

const (
	ActNone     Act = iota
	ActCycle        // power-cycle with PXE once (attempt Decision.Attempt)
	ActGiveUp       // fail the machine: Decision.Reason
	ActBootDisk     // set the one-time boot device to the disk: the install is done
)

// Decision is the leader's verdict on one machine.
type Decision struct {
	Act     Act
	Since   time.Time     // the reboot the machine has not checked in after
	Attempt int           // ActCycle: the attempt number, from 1
	Waited  time.Duration // since the reboot
	Reason  string        // ActGiveUp
}

// rebootSince is when the machine was last rebooted by its plan (the reboot step) or by
// a power command, if it has not checked in since and is in a state that waits for a
// boot; zero otherwise.
func rebootSince(m *shared.Machine) time.Time {
	switch m.State {
	case shared.StateReady, shared.StateFailed, shared.StateRetired, shared.StateLost, shared.StateInstalled, shared.StateJoining:
		return time.Time{} // booted, settled, or not ours to push
	}
	var since time.Time
	if m.Plan != nil {
		for i, st := range m.Steps {
			if i >= len(m.Plan.Steps) || m.Plan.Steps[i].Kind != shared.StepReboot {
				continue
			}
			if st.Status == shared.StepRunning || st.Status == shared.StepSucceeded {
				since = later(st.StartedAt, st.FinishedAt)
			}
		}
	}
	since = later(since, m.Power.BootAt)
	if since.IsZero() || m.Agent.LastSeen.After(since) {
		return time.Time{}
	}
	return since
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Decide is the recovery rule for one machine at now; hasBMC says whether a BMC is
// known for it. It is pure: the leader applies the decision through Raft
// (PowerRecover) before it acts, so a new leader sees the attempts already made.
func Decide(m *shared.Machine, hasBMC bool, now time.Time, p RecoverPolicy) Decision {
	if !hasBMC {
		return Decision{}
	}
	if d := bootDiskDue(m, now, p); d.Act != ActNone {
		return d
	}
	if p.After <= 0 {
		return Decision{}
	}
	return retry(rebootSince(m), m.Power, now, p)
}

// DecideExpected is Decide for an expected machine that has not registered: powered on
// by a command (Power.BootAt) and never seen, it is cycled with PXE once like a machine
// that did not come back from a reboot; giving up leaves the reason on the row.
func DecideExpected(row *shared.ExpectedMachine, hasBMC bool, now time.Time, p RecoverPolicy) Decision {
	if !hasBMC || p.After <= 0 || row.MachineID != "" || row.Power.GaveUp != "" {
		return Decision{}
	}
	return retry(row.Power.BootAt, row.Power, now, p)
}

// retry is the rule once a reboot at since has gone without a check-in (zero: none):
// another cycle when After has passed since it (or since the last cycle), until
// Attempts are spent, then give up.
func retry(since time.Time, pw shared.PowerInfo, now time.Time, p RecoverPolicy) Decision {
	if since.IsZero() {
		return Decision{}
	}
	done, last := 0, since
	if pw.RecoverSince.Equal(since) {
		done, last = pw.RecoverAttempts, later(since, pw.RecoverAt)
	}
	if now.Sub(last) < p.After {
		return Decision{}
	}
	d := Decision{Since: since, Waited: now.Sub(since).Round(time.Second)}
	if done >= p.Attempts {
		d.Act = ActGiveUp
		d.Reason = fmt.Sprintf("%d power cycle(s) with PXE once did not bring it back", done)
		return d
	}
	d.Act, d.Attempt = ActCycle, done+1
	return d
}

// bootDiskDue: once the plan's bootcfg step has pointed the machine at its disk, the
// BMC's one-time boot device is set to the disk, once per plan (a failed try is tried
// again after the recovery delay).
func bootDiskDue(m *shared.Machine, now time.Time, p RecoverPolicy) Decision {
	if m.Plan == nil || m.Boot != shared.BootDisk || m.Power.BootDiskPlan == m.Plan.Generation {
		return Decision{}
	}
	switch m.State {
	case shared.StateProvisioning, shared.StateInstalled, shared.StateJoining, shared.StateReady:
	default:
		return Decision{}
	}
	if l := m.Power.Last; l.Action == shared.PowerBootDisk && l.Error != "" && now.Sub(l.At) < max(p.After, time.Minute) {
		return Decision{}
	}
	return Decision{Act: ActBootDisk}
}

// Fleet is what the recovery rule reads: the machines with everything (the store's
// MachinesFull) and the expected rows (redacted: the BMC comes from the Resolver).
type Fleet interface {
	MachinesFull() []*shared.Machine
	Expected() []shared.ExpectedMachine
}

// RecoverPass is the leader's pass over the fleet: every machine's and every unmatched
// expected row's Decision, carried out. A cycle is first claimed through Raft
// (PowerRecover): if the claim is refused (another leader made that attempt, or the
// machine checked in), nothing is sent. Only the leader calls it.
func (m *Manager) RecoverPass(ctx context.Context, fleet Fleet, p RecoverPolicy) {
	now := m.now()
	targets, err := m.Resolver.PowerTargets(nil, true)
	if err != nil {
		m.log().Warn("power recovery: listing targets", "err", err)
		return
	}
	byID := make(map[shared.MachineID]Target, len(targets))
	byRow := make(map[string]Target, len(targets))
	for _, t := range targets {
		if t.MachineID != "" {
			byID[t.MachineID] = t
		} else if t.Key != "" {
			byRow[t.Key] = t
		}
	}
	for _, mach := range fleet.MachinesFull() {
		if ctx.Err() != nil {
			return
		}
		if t, ok := byID[mach.ID]; ok {
			m.carryOut(ctx, t, mach.Plan, Decide(mach, t.BMC.Driver != "", now, p), p)
		}
	}
	for _, row := range fleet.Expected() {
		if ctx.Err() != nil {
			return
		}
		if t, ok := byRow[row.Key()]; ok {
			m.carryOut(ctx, t, nil, DecideExpected(&row, t.BMC.Driver != "", now, p), p)
		}
	}
}

// carryOut does what d says about target t (plan: the machine's, for a boot-disk) and
// logs what went wrong: the next pass decides again.
func (m *Manager) carryOut(ctx context.Context, t Target, plan *shared.Plan, d Decision, p RecoverPolicy) {
	if err := m.act(ctx, t, plan, d, p); err != nil {
		m.log().Warn("power recovery", "machine", t.Name(), "err", err)
	}
}

func (m *Manager) act(ctx context.Context, t Target, plan *shared.Plan, d Decision, p RecoverPolicy) error {
	switch d.Act {
	case ActNone:
		return nil
	case ActBootDisk:
		o := m.do(ctx, t, shared.PowerRequest{Action: shared.PowerBootDisk}, ByCoordinator, false, plan.Generation)
		if !o.OK {
			return errors.New(o.Error)
		}
		return nil
	}
	claim := state.PowerRecover{ID: t.MachineID, Key: rowKey(t), Since: d.Since, Attempt: d.Attempt, Of: p.Attempts,
		Waited: d.Waited.String(), Time: m.now()}
	if d.Act == ActGiveUp {
		claim.GiveUp = d.Reason
	}
	if _, err := m.Applier.Apply(ctx, claim); err != nil {
		return fmt.Errorf("claiming recovery attempt %d: %w", d.Attempt, err)
	}
	if d.Act == ActGiveUp {
		m.log().Warn("power recovery gave up", "machine", t.Name(), "reason", d.Reason)
		return nil
	}
	o := m.do(ctx, t, shared.PowerRequest{Action: shared.PowerCycle, PXEOnce: true}, ByCoordinator, true, 0)
	if !o.OK {
		return errors.New(o.Error)
	}
	return nil
}
