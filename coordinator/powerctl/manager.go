package powerctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// ByCoordinator is the "who asked" of the coordinator's own power commands (recovery,
// boot-to-disk after an install).
const ByCoordinator = "coordinator"

// Target is one machine a power command can reach: its names and its BMC, with the
// BMC's password in clear (the power path alone sees it; nothing here logs, records or
// answers it).
type Target struct {
	// Ref is what the caller named the machine by (set by the Manager when empty).
	Ref       string
	MachineID shared.MachineID // empty: an expected row with no machine record yet
	Key       string           // the expected row's key, if any
	Hostname  string
	Labels    map[string]string
	State     shared.State
	BMC       shared.BMC // Driver "": no BMC known
}

// Name is how outcomes and logs name the target.
func (t Target) Name() string {
	switch {
	case t.MachineID != "":
		return string(t.MachineID)
	case t.Key != "":
		return t.Key
	}
	return t.Hostname
}

// Resolver finds power targets in the replicated state; the coordinator's store
// implements it (the lead wires it).
type Resolver interface {
	// PowerTarget finds one machine by machine ID, expected-row key or host name; an
	// unknown ref is an error matching ErrUnknownTarget.
	PowerTarget(ref string) (Target, error)
	// PowerTargets lists every machine (all) or those whose operator labels include
	// every pair of selector, machine records and expected rows not yet booted alike.
	PowerTargets(selector map[string]string, all bool) ([]Target, error)
}

// Applier writes a command through Raft (coordinator.Server.Apply).
type Applier interface {
	Apply(ctx context.Context, cmd state.Command) (state.Result, error)
}

var (
	// ErrUnknownTarget: no machine or expected row by that name.
	ErrUnknownTarget = errors.New("no machine or expected machine by that name")
	// ErrNoBMC: the machine has no BMC in the operator's import.
	ErrNoBMC = errors.New("no BMC known for this machine: give its row a bmc in `rivet machines import`")
)

// Defaults of a Manager.
const (
	DefaultTimeout = 2 * time.Minute // one command, soft-off included
	recordTimeout  = 15 * time.Second
)

// Manager runs power commands: it builds the BMC's driver, sends the command with a
// timeout, measures it, and records on the machine's timeline who asked, what, and what
// the BMC answered.
type Manager struct {
	Resolver Resolver
	Applier  Applier
	// Drivers builds a BMC's driver; nil: driverFor (IPMI and Redfish) with DriverOptions.
	Drivers       func(shared.BMC) (power.Driver, error)
	DriverOptions DriverOptions
	// Timeout bounds one command (PXE-once, the action and the status read); 0: DefaultTimeout.
	Timeout time.Duration
	Metrics *Metrics // may be nil
	Log     *slog.Logger
	// Now is the clock of the records; nil: time.Now.
	Now func() time.Time
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now().UTC()
	}
	return time.Now().UTC()
}

func (m *Manager) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	return slog.Default()
}

// Run resolves ref and runs the command on it. The error is only the resolver's (an
// unknown machine): the command's own failure is in the outcome.
func (m *Manager) Run(ctx context.Context, ref string, req shared.PowerRequest, by string) (shared.PowerOutcome, error) {
	t, err := m.Resolver.PowerTarget(ref)
	if err != nil {
		return shared.PowerOutcome{}, err
	}
	t.Ref = ref
	return m.Do(ctx, t, req, by), nil
}

// BMCOf says whether ref has a BMC, and which (driver user@address: no password).
func (m *Manager) BMCOf(ref string) (string, bool) {
	t, err := m.Resolver.PowerTarget(ref)
	if err != nil || t.BMC.Driver == "" {
		return "", false
	}
	return t.BMC.String(), true
}

// Batch chooses the machines of req and runs the command on them with FanOut, calling
// each (may be nil) with every outcome as it comes. Nothing is sent if a ref is unknown.
func (m *Manager) Batch(ctx context.Context, req shared.PowerBatchRequest, by string, each func(shared.PowerOutcome)) (shared.PowerBatchResult, error) {
	targets, err := m.choose(req)
	if err != nil {
		return shared.PowerBatchResult{}, err
	}
	stagger, err := req.StaggerDuration()
	if err != nil {
		return shared.PowerBatchResult{}, err
	}
	// The fan-out runs over indexes, so that each outcome lands in its target's place.
	idx := make([]int, len(targets))
	for i := range idx {
		idx[i] = i
	}
	outcomes := make([]shared.PowerOutcome, len(targets))
	outs := FanOutEach(ctx, idx, req.BatchSize(), stagger, func(ctx context.Context, i int) error {
		outcomes[i] = m.Do(ctx, targets[i], req.PowerRequest, by)
		return nil
	}, func(o Outcome[int]) {
		if o.NotStarted() {
			outcomes[o.Target] = notStarted(targets[o.Target], req.PowerRequest, o.Err)
		}
		if each != nil {
			each(outcomes[o.Target])
		}
	})
	res := shared.PowerBatchResult{Outcomes: outcomes}
	for i := range outs {
		if outcomes[i].OK {
			res.Succeeded++
		} else {
			res.Failed++
		}
	}
	return res, nil
}

func notStarted(t Target, req shared.PowerRequest, err error) shared.PowerOutcome {
	return shared.PowerOutcome{Ref: t.Ref, MachineID: t.MachineID, Hostname: t.Hostname, Action: req.Action,
		PXEOnce: req.PXEOnce, Error: err.Error()}
}

func (m *Manager) choose(req shared.PowerBatchRequest) ([]Target, error) {
	if len(req.Refs) == 0 {
		ts, err := m.Resolver.PowerTargets(req.Selector, req.All)
		for i := range ts {
			if ts[i].Ref == "" {
				ts[i].Ref = ts[i].Name()
			}
		}
		return ts, err
	}
	var (
		ts      []Target
		unknown []string
	)
	seen := map[string]bool{}
	for _, ref := range req.Refs {
		t, err := m.Resolver.PowerTarget(ref)
		if err != nil {
			unknown = append(unknown, ref)
			continue
		}
		t.Ref = ref
		if seen[t.Name()] {
			continue // named twice: switched once
		}
		seen[t.Name()] = true
		ts = append(ts, t)
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownTarget, strings.Join(unknown, ", "))
	}
	return ts, nil
}

// Do runs one command on t and records it. It never fails: what went wrong is the
// outcome's Error (and the timeline's event).
func (m *Manager) Do(ctx context.Context, t Target, req shared.PowerRequest, by string) shared.PowerOutcome {
	return m.do(ctx, t, req, by, false, 0)
}

// do is Do for the coordinator's own commands too: a recovery cycle, or boot-disk for
// a plan generation.
func (m *Manager) do(ctx context.Context, t Target, req shared.PowerRequest, by string, recovery bool, plan uint64) shared.PowerOutcome {
	if t.Ref == "" {
		t.Ref = t.Name()
	}
	o := shared.PowerOutcome{Ref: t.Ref, MachineID: t.MachineID, Hostname: t.Hostname, Action: req.Action,
		PXEOnce: req.PXEOnce, Started: m.now()}
	if t.BMC.Driver != "" {
		o.BMC = t.BMC.String()
	}
	start := time.Now()
	state, err := m.send(ctx, t, req)
	took := time.Since(start)
	o.DurationMS = took.Milliseconds()
	if err != nil {
		o.Error = redact(err.Error(), t.BMC.Password)
	} else {
		o.OK, o.State = true, string(state)
	}
	m.Metrics.observe(t.BMC.Driver, req.Action, err, took)
	lg := m.log().With("machine", t.Name(), "action", req.Action, "pxe_once", req.PXEOnce, "by", by, "bmc", o.BMC)
	if err != nil {
		lg.Warn("power command failed", "err", o.Error)
	} else {
		lg.Info("power command done", "state", o.State, "took", took)
	}
	m.record(ctx, t, o, by, recovery, plan)
	return o
}

// send talks to the BMC: PXE-once first if asked, the action, then the power state.
func (m *Manager) send(ctx context.Context, t Target, req shared.PowerRequest) (power.State, error) {
	if t.BMC.Driver == "" {
		return "", fmt.Errorf("machine %s: %w", t.Name(), ErrNoBMC)
	}
	build := m.Drivers
	if build == nil {
		build = func(b shared.BMC) (power.Driver, error) { return driverFor(b, m.DriverOptions) }
	}
	d, err := build(t.BMC)
	if err != nil {
		return "", err
	}
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if req.PXEOnce {
		if err := d.SetBootDevice(ctx, power.BootPXE); err != nil {
			return "", fmt.Errorf("setting PXE once: %w", err)
		}
	}
	switch req.Action {
	case shared.PowerOn:
		err = d.On(ctx)
	case shared.PowerOff:
		err = d.Off(ctx)
	case shared.PowerCycle:
		err = d.Cycle(ctx)
	case shared.PowerBootDisk:
		return "", d.SetBootDevice(ctx, power.BootDisk)
	case shared.PowerStatus:
	default:
		return "", fmt.Errorf("power action %q: want on, off, cycle or status", req.Action)
	}
	if err != nil {
		return "", err
	}
	return d.Status(ctx)
}

// record writes the outcome on the machine's timeline (an expected row's, until its
// machine registers), even when the caller has gone: a command sent is recorded.
func (m *Manager) record(ctx context.Context, t Target, o shared.PowerOutcome, by string, recovery bool, plan uint64) {
	if (t.MachineID == "" && t.Key == "") || m.Applier == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	cmd := state.PowerRecord{ID: t.MachineID, Key: rowKey(t), Action: o.Action, PXEOnce: o.PXEOnce, By: by, BMC: o.BMC,
		State: o.State, Error: o.Error, Time: o.Started, Recovery: recovery, Plan: plan}
	if _, err := m.Applier.Apply(ctx, cmd); err != nil {
		m.log().Warn("recording a power command failed", "machine", t.Name(), "action", o.Action, "err", err)
	}
}

// rowKey is the expected row a command on t is recorded on: only while no machine holds it.
func rowKey(t Target) string {
	if t.MachineID != "" {
		return ""
	}
	return t.Key
}

// redact removes the password from a text that should never hold it (a driver's error):
// the last line of defence, not the first.
func redact(text, password string) string {
	if password == "" {
		return text
	}
	return strings.ReplaceAll(text, password, "[redacted]")
}
