package shared

import (
	"fmt"
	"time"
)

// API paths of power commands (admin only). A power command is sent to the machine's
// BMC by the coordinator that receives it; what it asked and what the BMC answered is
// written on the machine's timeline (EventPower) with who asked.
const (
	PathMachinePower = "/v1/machines/{id}/power" // POST PowerRequest → PowerOutcome
	PathPower        = "/v1/power"               // POST PowerBatchRequest → PowerBatchResult
)

// PowerAction is what a power command does.
type PowerAction string

const (
	PowerOn     PowerAction = "on"
	PowerOff    PowerAction = "off" // soft (ACPI), then hard after the driver's timeout
	PowerCycle  PowerAction = "cycle"
	PowerStatus PowerAction = "status"
	// PowerBootDisk is the coordinator's own: the one-time boot device set to the disk
	// after an install. Operators do not send it.
	PowerBootDisk PowerAction = "boot-disk"
)

// PowerActions lists the actions an operator can send.
var PowerActions = []PowerAction{PowerOn, PowerOff, PowerCycle, PowerStatus}

// Validate checks that a is an operator's power action.
func (a PowerAction) Validate() error { return validateEnum("power action", a, PowerActions) }

// PowerRequest is one machine's power command.
type PowerRequest struct {
	Action PowerAction `json:"action"`
	// PXEOnce sets the one-time boot device to the network before on or cycle, so the
	// machine boots Rivet's agent once (a reinstall, a recovery).
	PXEOnce bool `json:"pxe_once,omitempty"`
}

// Validate checks the action and that pxe_once goes with on or cycle.
func (r *PowerRequest) Validate() error {
	if err := r.Action.Validate(); err != nil {
		return err
	}
	if r.PXEOnce && r.Action != PowerOn && r.Action != PowerCycle {
		return fmt.Errorf("pxe_once goes with on or cycle, not %s", r.Action)
	}
	return nil
}

// Limits of a batch power command.
const (
	MaxPowerBatch   = 1000             // machines switched at once
	MaxPowerStagger = 10 * time.Minute // between two starts
	MaxPowerRefs    = 10000
)

// PowerBatchRequest is a power command for many machines: those named (Refs), those
// whose operator labels match Selector, or All. At most Batch commands run at once and
// two commands start at least Stagger apart, so a rack is not powered in one inrush.
type PowerBatchRequest struct {
	PowerRequest
	Refs     []string          `json:"refs,omitempty"` // machine IDs, expected-row keys or host names
	Selector map[string]string `json:"selector,omitempty"`
	All      bool              `json:"all,omitempty"`
	Batch    int               `json:"batch,omitempty"` // default 20
	// Stagger is a Go duration ("2s"); default none.
	Stagger string `json:"stagger,omitempty"`
}

// DefaultPowerBatch is a batch command's concurrency when none is given.
const DefaultPowerBatch = 20

// Validate checks that exactly one way of choosing machines is given and the bounds.
func (r *PowerBatchRequest) Validate() error {
	if err := r.PowerRequest.Validate(); err != nil {
		return err
	}
	ways := 0
	if len(r.Refs) > 0 {
		ways++
	}
	if len(r.Selector) > 0 {
		ways++
	}
	if r.All {
		ways++
	}
	if ways != 1 {
		return fmt.Errorf("choose the machines one way: refs, selector or all")
	}
	if len(r.Refs) > MaxPowerRefs {
		return fmt.Errorf("refs: at most %d", MaxPowerRefs)
	}
	for _, ref := range r.Refs {
		if ref == "" || len(ref) > 256 {
			return fmt.Errorf("refs: %q is not a machine reference", ref)
		}
	}
	if err := ValidateLabels(r.Selector); err != nil {
		return fmt.Errorf("selector: %w", err)
	}
	if r.Batch < 0 || r.Batch > MaxPowerBatch {
		return fmt.Errorf("batch %d: want 1 to %d", r.Batch, MaxPowerBatch)
	}
	if _, err := r.StaggerDuration(); err != nil {
		return err
	}
	return nil
}

// StaggerDuration is Stagger parsed (0 when empty).
func (r *PowerBatchRequest) StaggerDuration() (time.Duration, error) {
	if r.Stagger == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(r.Stagger)
	if err != nil || d < 0 || d > MaxPowerStagger {
		return 0, fmt.Errorf("stagger %q: want a duration from 0s to %s", r.Stagger, MaxPowerStagger)
	}
	return d, nil
}

// BatchSize is Batch with its default.
func (r *PowerBatchRequest) BatchSize() int {
	if r.Batch == 0 {
		return DefaultPowerBatch
	}
	return r.Batch
}

// PowerOutcome is what one machine's power command came to. It never carries the BMC's
// password: BMC is the redacted description (driver user@address).
type PowerOutcome struct {
	Ref       string      `json:"ref"`
	MachineID MachineID   `json:"machine_id,omitempty"`
	Hostname  string      `json:"hostname,omitempty"`
	Action    PowerAction `json:"action"`
	PXEOnce   bool        `json:"pxe_once,omitempty"`
	BMC       string      `json:"bmc,omitempty"`
	// State is the power state the BMC reports after the command ("on" or "off"), when
	// it answered.
	State string `json:"state,omitempty"`
	// Error says why the command failed (BMC unreachable, login refused, no BMC known).
	Error      string    `json:"error,omitempty"`
	OK         bool      `json:"ok"`
	Started    time.Time `json:"started,omitzero"`
	DurationMS int64     `json:"duration_ms"`
}

// PowerBatchResult is a batch command's answer: one outcome per machine, in the order
// they were chosen, and the counts.
type PowerBatchResult struct {
	Outcomes  []PowerOutcome `json:"outcomes"`
	Succeeded int            `json:"succeeded"`
	Failed    int            `json:"failed"`
}

// EventPower is a power command sent to the machine's BMC: the action, who asked, and
// what the BMC answered (a state or an error).
const EventPower = "power"

// PowerInfo is a machine's power record, kept by the coordinator: the last power command
// sent to its BMC and the coordinator's recovery attempts. It holds no secret.
type PowerInfo struct {
	// Last is the last command sent to the BMC: who asked, when, and what it answered.
	Last PowerLast `json:"last,omitzero"`
	// BootAt is when a power command (on or cycle, not the coordinator's recovery) last
	// switched the machine on: a reboot the coordinator waits for a check-in after.
	BootAt time.Time `json:"boot_at,omitzero"`
	// RecoverSince is the reboot the recovery attempts are about (the start of the step
	// that rebooted the machine, or the power command that switched it on);
	// RecoverAttempts how many power cycles the coordinator sent for it, the last at
	// RecoverAt. A new reboot starts the count again.
	RecoverSince    time.Time `json:"recover_since,omitzero"`
	RecoverAttempts int       `json:"recover_attempts,omitempty"`
	RecoverAt       time.Time `json:"recover_at,omitzero"`
	// BootDiskPlan is the plan generation after whose install the boot device was set to
	// the disk (0: not set for the current plan).
	BootDiskPlan uint64 `json:"boot_disk_plan,omitempty"`
	// GaveUp is why the recovery stopped cycling an expected machine that never
	// registered (a registered machine fails instead); a power-on starts afresh.
	GaveUp string `json:"gave_up,omitempty"`
}

// PowerLast is a machine's last power command and the BMC's answer: a power state, or
// the error.
type PowerLast struct {
	Action PowerAction `json:"action,omitempty"`
	By     string      `json:"by,omitempty"`
	At     time.Time   `json:"at,omitzero"`
	State  string      `json:"state,omitempty"`
	Error  string      `json:"error,omitempty"`
}

// PowerStreamType is the media type of a streamed batch answer: one PowerStreamLine
// per line (JSON), the outcomes as they come and then the result.
const PowerStreamType = "application/x-ndjson"

// PowerStreamLine is one line of a streamed batch answer: an outcome, or the result.
type PowerStreamLine struct {
	Outcome *PowerOutcome     `json:"outcome,omitempty"`
	Result  *PowerBatchResult `json:"result,omitempty"`
}
