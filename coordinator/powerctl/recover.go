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
	since := rebootSince(m)
	if since.IsZero() {
		return Decision{}
	}
	done, last := 0, since
	if m.Power.RecoverSince.Equal(since) {
		done, last = m.Power.RecoverAttempts, later(since, m.Power.RecoverAt)
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

// Machines lists the machines with everything the recovery rule reads (the store's
// MachinesFull).
type Machines interface {
	MachinesFull() []*shared.Machine
}

// RecoverPass is the leader's pass over the fleet: every machine's Decision, carried
// out. A cycle is first claimed through Raft (PowerRecover): if the claim is refused
// (another leader made that attempt, or the machine checked in), nothing is sent.
// Only the leader calls it.
func (m *Manager) RecoverPass(ctx context.Context, fleet Machines, p RecoverPolicy) {
	now := m.now()
	targets, err := m.Resolver.PowerTargets(nil, true)
	if err != nil {
		m.log().Warn("power recovery: listing targets", "err", err)
		return
	}
	byID := make(map[shared.MachineID]Target, len(targets))
	for _, t := range targets {
		if t.MachineID != "" {
			byID[t.MachineID] = t
		}
	}
	for _, mach := range fleet.MachinesFull() {
		if ctx.Err() != nil {
			return
		}
		t, ok := byID[mach.ID]
		if !ok {
			continue
		}
		d := Decide(mach, t.BMC.Driver != "", now, p)
		if err := m.carryOut(ctx, t, mach, d, p); err != nil {
			m.log().Warn("power recovery", "machine", mach.ID, "err", err)
		}
	}
}

func (m *Manager) carryOut(ctx context.Context, t Target, mach *shared.Machine, d Decision, p RecoverPolicy) error {
	switch d.Act {
	case ActNone:
		return nil
	case ActBootDisk:
		o := m.do(ctx, t, shared.PowerRequest{Action: shared.PowerBootDisk}, ByCoordinator, false, mach.Plan.Generation)
		if !o.OK {
			return errors.New(o.Error)
		}
		return nil
	}
	claim := state.PowerRecover{ID: mach.ID, Since: d.Since, Attempt: d.Attempt, Of: p.Attempts,
		Waited: d.Waited.String(), Time: m.now()}
	if d.Act == ActGiveUp {
		claim.GiveUp = d.Reason
	}
	if _, err := m.Applier.Apply(ctx, claim); err != nil {
		return fmt.Errorf("claiming recovery attempt %d: %w", d.Attempt, err)
	}
	if d.Act == ActGiveUp {
		m.log().Warn("power recovery gave up: machine failed", "machine", mach.ID, "reason", d.Reason)
		return nil
	}
	o := m.do(ctx, t, shared.PowerRequest{Action: shared.PowerCycle, PXEOnce: true}, ByCoordinator, true, 0)
	if !o.OK {
		return errors.New(o.Error)
	}
	return nil
}
