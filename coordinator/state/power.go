package state

import (
	"fmt"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// Power commands (coordinator/powerctl proposes them). Their fsm type bytes are the last
// ones: TypePowerRecord and TypePowerRecover.

func (PowerRecord) command()  {}
func (PowerRecover) command() {}

// PowerRecord records a power command sent to a machine's BMC and what the BMC answered.
// It never holds the BMC's password: BMC is its redacted description.
type PowerRecord struct {
	ID      shared.MachineID   `json:"id"`
	Action  shared.PowerAction `json:"action"`
	PXEOnce bool               `json:"pxe_once,omitempty"`
	By      string             `json:"by"` // the operator token's name, or "coordinator"
	BMC     string             `json:"bmc,omitempty"`
	State   string             `json:"state,omitempty"` // the power state the BMC reported
	Error   string             `json:"error,omitempty"`
	Time    time.Time          `json:"time"`
	// Recovery: the command is the coordinator's recovery power cycle (PowerRecover).
	Recovery bool `json:"recovery,omitempty"`
	// Plan is the plan generation a boot-disk command was sent for.
	Plan uint64 `json:"plan,omitempty"`
}

// PowerRecover is the leader's decision to power-cycle a machine that did not check in
// after a reboot (Attempt of the reboot at Since), or, with GiveUp, to stop trying and
// fail the machine. It is written before the BMC is asked, and applies only if it is
// the next attempt for that reboot: a new leader reads the attempts already made and
// does not cycle the machine twice.
type PowerRecover struct {
	ID      shared.MachineID `json:"id"`
	Since   time.Time        `json:"since"`
	Attempt int              `json:"attempt"`
	Of      int              `json:"of"` // the attempts allowed, for the timeline
	Waited  string           `json:"waited,omitempty"`
	GiveUp  string           `json:"give_up,omitempty"` // the reason the machine fails
	Time    time.Time        `json:"time"`
}

// RulePowerRecover: the recovery attempt is not the next one for that reboot (another
// leader made it), or the machine checked in meanwhile.
const RulePowerRecover Rule = "power_recover"

// ApplyPowerRecord writes the command and the BMC's answer on the machine's timeline.
func (s *Store) ApplyPowerRecord(c PowerRecord, index uint64) (Result, error) {
	return s.onMachine(index, c.ID, func(m *shared.Machine) (Result, error) {
		s.event(index, c.Time, m.ID, shared.EventPower, powerText(c))
		m.Power.Last = shared.PowerLast{Action: c.Action, By: c.By, At: c.Time, State: c.State, Error: c.Error}
		switch {
		case c.Error != "":
		case c.Action == shared.PowerBootDisk:
			m.Power.BootDiskPlan = c.Plan
		case (c.Action == shared.PowerOn || c.Action == shared.PowerCycle) && !c.Recovery:
			m.Power.BootAt = c.Time
		}
		m.UpdatedAt = c.Time
		return Result{Machine: clone(m)}, nil
	})
}

func powerText(c PowerRecord) string {
	t := "power " + string(c.Action)
	if c.PXEOnce {
		t += " (PXE once)"
	}
	t += " by " + c.By
	if c.BMC != "" {
		t += " via " + c.BMC
	}
	switch {
	case c.Error != "":
		t += ": failed: " + c.Error
	case c.State != "":
		t += ": BMC reports power " + c.State
	default:
		t += ": done"
	}
	return t
}

// ApplyPowerRecover records the leader's recovery attempt, or fails the machine.
func (s *Store) ApplyPowerRecover(c PowerRecover, index uint64) (Result, error) {
	return s.onMachine(index, c.ID, func(m *shared.Machine) (Result, error) {
		p := &m.Power
		done := 0
		if p.RecoverSince.Equal(c.Since) {
			done = p.RecoverAttempts
		}
		if m.Agent.LastSeen.After(c.Since) {
			return Result{}, reject(KindConflict, RulePowerRecover, string(c.ID),
				"machine %s checked in after the reboot of %s: no recovery needed", c.ID, c.Since.Format(time.RFC3339))
		}
		if c.GiveUp != "" {
			if m.State == shared.StateFailed || m.State == shared.StateRetired {
				return Result{}, reject(KindConflict, RulePowerRecover, string(c.ID), "machine %s is already %s", c.ID, m.State)
			}
			msg := fmt.Sprintf("no check-in %s after the reboot at %s: %s", c.Waited, c.Since.UTC().Format(time.RFC3339), c.GiveUp)
			s.event(index, c.Time, m.ID, shared.EventPower, "coordinator gives up recovery: "+msg)
			m.LastError = &shared.MachineError{Step: "power-recovery", Message: msg, At: c.Time,
				Hint: "check the machine's console through its BMC, then `rivet machines retry` or `rivet machines replan` it"}
			s.setState(index, c.Time, m, shared.StateFailed, "power recovery gave up")
			m.UpdatedAt = c.Time
			return Result{Machine: clone(m)}, nil
		}
		if c.Attempt != done+1 {
			return Result{}, reject(KindConflict, RulePowerRecover, string(c.ID),
				"recovery attempt %d of machine %s for the reboot of %s: %d already made", c.Attempt, c.ID, c.Since.Format(time.RFC3339), done)
		}
		p.RecoverSince, p.RecoverAttempts, p.RecoverAt = c.Since, c.Attempt, c.Time
		s.event(index, c.Time, m.ID, shared.EventPower, fmt.Sprintf(
			"coordinator: no check-in %s after the reboot at %s: power cycle with PXE once, attempt %d of %d",
			c.Waited, c.Since.UTC().Format(time.RFC3339), c.Attempt, c.Of))
		m.UpdatedAt = c.Time
		return Result{Machine: clone(m)}, nil
	})
}

// onMachine is mutate on one known machine.
func (s *Store) onMachine(index uint64, id shared.MachineID, fn func(m *shared.Machine) (Result, error)) (Result, error) {
	return s.mutate(index, id, func() (Result, error) {
		if m, ok := s.data.Machines[id]; ok {
			return fn(m)
		}
		return Result{}, notFound(id)
	})
}
