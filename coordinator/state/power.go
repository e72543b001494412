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
	ID  shared.MachineID `json:"id,omitempty"`
	Key string           `json:"key,omitempty"` // without ID: the expected row's

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
	ID  shared.MachineID `json:"id,omitempty"`
	Key string           `json:"key,omitempty"` // without ID: the expected row's

	Since   time.Time `json:"since"`
	Attempt int       `json:"attempt"`
	Of      int       `json:"of"` // the attempts allowed, for the timeline
	Waited  string    `json:"waited,omitempty"`
	GiveUp  string    `json:"give_up,omitempty"` // the reason the machine fails
	Time    time.Time `json:"time"`
}

// RulePowerRecover: the recovery attempt is not the next one for that reboot (another
// leader made it), or the machine checked in meanwhile.
const RulePowerRecover Rule = "power_recover"

// ApplyPowerRecord writes the command and the BMC's answer on the machine's timeline (or
// the expected row's, which its machine takes when it registers).
func (s *Store) ApplyPowerRecord(c PowerRecord, index uint64) (Result, error) {
	return s.onPowerSubject(index, c.ID, c.Key, func(p powerSubject) (Result, error) {
		s.event(index, c.Time, p.timeline, shared.EventPower, powerText(c))
		p.power.Last = shared.PowerLast{Action: c.Action, By: c.By, At: c.Time, State: c.State, Error: c.Error}
		switch {
		case c.Error != "":
		case c.Action == shared.PowerBootDisk:
			p.power.BootDiskPlan = c.Plan
		case (c.Action == shared.PowerOn || c.Action == shared.PowerCycle) && !c.Recovery:
			p.power.BootAt, p.power.GaveUp = c.Time, ""
		}
		return p.done(c.Time), nil
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

// ApplyPowerRecover records the leader's recovery attempt, or fails the machine (an
// expected row that never registered keeps the reason instead).
func (s *Store) ApplyPowerRecover(c PowerRecover, index uint64) (Result, error) {
	return s.onPowerSubject(index, c.ID, c.Key, func(p powerSubject) (Result, error) {
		done := 0
		if p.power.RecoverSince.Equal(c.Since) {
			done = p.power.RecoverAttempts
		}
		if p.lastSeen.After(c.Since) {
			return Result{}, reject(KindConflict, RulePowerRecover, p.name,
				"machine %s checked in after the reboot of %s: no recovery needed", p.name, c.Since.Format(time.RFC3339))
		}
		if c.GiveUp != "" {
			return s.giveUpRecovery(index, c, p)
		}
		if c.Attempt != done+1 {
			return Result{}, reject(KindConflict, RulePowerRecover, p.name,
				"recovery attempt %d of machine %s for the reboot of %s: %d already made", c.Attempt, p.name, c.Since.Format(time.RFC3339), done)
		}
		p.power.RecoverSince, p.power.RecoverAttempts, p.power.RecoverAt = c.Since, c.Attempt, c.Time
		s.event(index, c.Time, p.timeline, shared.EventPower, fmt.Sprintf(
			"coordinator: no check-in %s after the reboot at %s: power cycle with PXE once, attempt %d of %d",
			c.Waited, c.Since.UTC().Format(time.RFC3339), c.Attempt, c.Of))
		return p.done(c.Time), nil
	})
}

func (s *Store) giveUpRecovery(index uint64, c PowerRecover, p powerSubject) (Result, error) {
	msg := fmt.Sprintf("no check-in %s after the reboot at %s: %s", c.Waited, c.Since.UTC().Format(time.RFC3339), c.GiveUp)
	switch {
	case p.m == nil && p.power.GaveUp != "":
		return Result{}, reject(KindConflict, RulePowerRecover, p.name, "recovery of expected machine %s already gave up", p.name)
	case p.m == nil:
		p.power.GaveUp = msg
	case p.m.State == shared.StateFailed || p.m.State == shared.StateRetired:
		return Result{}, reject(KindConflict, RulePowerRecover, p.name, "machine %s is already %s", p.name, p.m.State)
	default:
		p.m.LastError = &shared.MachineError{Step: "power-recovery", Message: msg, At: c.Time,
			Hint: "check the machine's console through its BMC, then `rivet machines retry` or `rivet machines replan` it"}
		s.setState(index, c.Time, p.m, shared.StateFailed, "power recovery gave up")
	}
	s.event(index, c.Time, p.timeline, shared.EventPower, "coordinator gives up recovery: "+msg)
	return p.done(c.Time), nil
}

// powerSubject is what a power command is about: a machine, or an expected row that no
// machine has matched yet. A row's events wait on a timeline of its own
// (rowTimeline) until its machine registers and takes them.
type powerSubject struct {
	s        *Store
	m        *shared.Machine // nil for a row
	power    *shared.PowerInfo
	name     string
	timeline shared.MachineID
	lastSeen time.Time
}

// done marks the subject changed and is the command's result.
func (p powerSubject) done(now time.Time) Result {
	if p.m == nil {
		p.s.expectedChanged = true
		return Result{}
	}
	p.m.UpdatedAt = now
	return Result{Machine: clone(p.m)}
}

// onPowerSubject is mutate on the machine id or, without one, on the expected row key
// while no machine holds it.
func (s *Store) onPowerSubject(index uint64, id shared.MachineID, key string, fn func(powerSubject) (Result, error)) (Result, error) {
	if id == "" && key != "" {
		return s.mutate(index, "", func() (Result, error) {
			e, ok := s.data.Expected[key]
			if !ok {
				return Result{}, reject(KindNotFound, RulePowerRecover, key, "no expected machine %s", key)
			}
			if e.MachineID != "" {
				return Result{}, reject(KindConflict, RulePowerRecover, key,
					"expected machine %s is machine %s now: send its power commands there", key, e.MachineID)
			}
			return fn(powerSubject{s: s, power: &e.Power, name: "expected machine " + key, timeline: rowTimeline(key)})
		})
	}
	return s.onMachine(index, id, func(m *shared.Machine) (Result, error) {
		return fn(powerSubject{s: s, m: m, power: &m.Power, name: string(m.ID), timeline: m.ID, lastSeen: m.Agent.LastSeen})
	})
}

// rowTimeline is where an expected row's events wait for its machine.
func rowTimeline(key string) shared.MachineID { return shared.MachineID("expected:" + key) }

// takeRowTimeline puts the events of row key before machine id's own: its timeline
// starts with the power-on that brought it. The caller holds s.mu.
func (s *Store) takeRowTimeline(key string, id shared.MachineID) {
	evs := s.data.Events[rowTimeline(key)]
	if len(evs) == 0 {
		return
	}
	delete(s.data.Events, rowTimeline(key))
	all := make([]shared.Event, 0, len(evs)+len(s.data.Events[id])) // a snapshot may share evs
	for _, ev := range evs {
		ev.MachineID = id
		all = append(all, ev)
	}
	all = append(all, s.data.Events[id]...)
	s.data.Events[id] = all[max(0, len(all)-MaxEventsPerMachine):]
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
