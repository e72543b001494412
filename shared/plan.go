package shared

import (
	"fmt"
	"time"
)

// StepKind names what a step does; each kind has one executor on the agent.
type StepKind string

const (
	StepDisk    StepKind = "disk"    // wipe the named disk, optionally lay out a GPT
	StepImage   StepKind = "image"   // stream the OS image onto the named disk
	StepHandoff StepKind = "handoff" // give the installed OS the agent's config and machine token
	StepBootCfg StepKind = "bootcfg" // record that the machine boots from disk next
	StepReboot  StepKind = "reboot"  // reboot into the installed OS
	StepSwarm   StepKind = "swarm"   // init or join the Docker Swarm
)

// Phase says where a step runs: in the RAM agent before install, or on the installed OS.
type Phase string

const (
	PhaseRAM  Phase = "ram"
	PhaseDisk Phase = "disk"
)

// Plan is the ordered list of steps the coordinator hands a machine. Generation grows
// with every re-plan so that reports for an old plan are refused.
type Plan struct {
	MachineID  MachineID `json:"machine_id"`
	Role       string    `json:"role"`
	Generation uint64    `json:"generation"`
	Steps      []Step    `json:"steps"`
}

// DiskTarget names a disk by hardware identity. The agent refuses to touch a disk whose
// serial or WWN does not match; Name is only a hint for people.
type DiskTarget struct {
	Serial string `json:"serial,omitempty"`
	WWN    string `json:"wwn,omitempty"`
	Name   string `json:"name,omitempty"`
}

// Step is one thing to do. Exactly the field matching Kind is set.
type Step struct {
	Name    string       `json:"name"`
	Kind    StepKind     `json:"kind"`
	Phase   Phase        `json:"phase"`
	Disk    *DiskStep    `json:"disk,omitempty"`
	Image   *ImageStep   `json:"image,omitempty"`
	Handoff *HandoffStep `json:"handoff,omitempty"`
	BootCfg *BootCfgStep `json:"bootcfg,omitempty"`
	Reboot  *RebootStep  `json:"reboot,omitempty"`
	Swarm   *SwarmStep   `json:"swarm,omitempty"`
}

// DiskStep wipes Target (signatures at both ends, GPT backup) and optionally writes a GPT.
type DiskStep struct {
	Target DiskTarget `json:"target"`
	GPT    bool       `json:"gpt,omitempty"`
}

// ImageStep writes Image onto Target.
type ImageStep struct {
	Target DiskTarget `json:"target"`
	Image  ImageSpec  `json:"image"`
}

// DefaultRootLabel is the file-system label of an OS image's root partition, where the
// handoff step writes the agent's config and machine token.
const DefaultRootLabel = "rivet-root"

// HandoffStep writes what the installed OS's agent needs to continue as this machine
// (its config file and machine token) into the root file system labelled RootLabel on
// Target, so the agent there checks in without a new registration.
type HandoffStep struct {
	Target    DiskTarget `json:"target"`
	RootLabel string     `json:"root_label"`
	// Hostname goes into the installed OS's /etc/hostname, so that every machine of
	// one image has a name of its own (in `docker node ls`, in logs); empty keeps the
	// image's.
	Hostname string `json:"hostname,omitempty"`
}

// BootCfgStep records the machine's next network-boot answer.
type BootCfgStep struct {
	Boot BootTarget `json:"boot"`
}

// RebootStep reboots the machine.
type RebootStep struct{}

// SwarmStep makes the node's dockerd part of the Swarm. Join tokens never travel in the
// plan: the agent fetches them from the swarm-join endpoint when it runs this step.
type SwarmStep struct {
	Role string `json:"role"` // manager or worker
	// Init: this machine creates the swarm. The planner designates exactly one manager
	// (the first it places); the coordinator tells nobody else to init.
	Init          bool   `json:"init,omitempty"`
	AdvertiseAddr string `json:"advertise_addr,omitempty"`
	// LeaveNode is the node id this machine had before it was re-provisioned in place
	// (removed from the swarm): an engine still holding that node's swarm state leaves it
	// first, so it joins as a new node.
	LeaveNode string `json:"leave_node,omitempty"`
}

// BootTarget is what the boot services answer a machine.
type BootTarget string

const (
	BootAgent BootTarget = "agent" // network-boot the Rivet agent
	BootDisk  BootTarget = "disk"  // fall through to the local disk
	BootNone  BootTarget = "none"  // stay silent (retired)
)

// Validate checks the plan and each of its steps.
func (p *Plan) Validate() error {
	if err := p.MachineID.Validate(); err != nil {
		return err
	}
	if len(p.Steps) > 64 {
		return fmt.Errorf("plan has more than 64 steps")
	}
	seen := map[string]bool{}
	for i := range p.Steps {
		s := &p.Steps[i]
		if err := s.Validate(); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
		if seen[s.Name] {
			return fmt.Errorf("step %d: duplicate name %q", i, s.Name)
		}
		seen[s.Name] = true
	}
	return nil
}

// Validate checks that the step's payload matches its kind.
func (s *Step) Validate() error {
	if err := ValidateName("step", s.Name); err != nil {
		return err
	}
	if s.Phase != PhaseRAM && s.Phase != PhaseDisk {
		return fmt.Errorf("step %s: phase %q: want ram or disk", s.Name, s.Phase)
	}
	payloads := 0
	for _, set := range []bool{s.Disk != nil, s.Image != nil, s.Handoff != nil, s.BootCfg != nil, s.Reboot != nil, s.Swarm != nil} {
		if set {
			payloads++
		}
	}
	ok := payloads == 1
	switch s.Kind {
	case StepDisk:
		ok = ok && s.Disk != nil && s.Disk.Target.valid()
	case StepImage:
		ok = ok && s.Image != nil && s.Image.Target.valid() && s.Image.Image.Validate() == nil
	case StepHandoff:
		ok = ok && s.Handoff != nil && s.Handoff.Target.valid() && validLabel(s.Handoff.RootLabel) &&
			(s.Handoff.Hostname == "" || ValidateName("host", s.Handoff.Hostname) == nil)
	case StepBootCfg:
		ok = ok && s.BootCfg != nil && s.BootCfg.Boot.Valid()
	case StepReboot:
		ok = ok && s.Reboot != nil
	case StepSwarm:
		ok = ok && s.Swarm != nil && (s.Swarm.Role == SwarmManager || s.Swarm.Role == SwarmWorker) &&
			(!s.Swarm.Init || s.Swarm.Role == SwarmManager) && len(s.Swarm.LeaveNode) <= maxFieldLen
	default:
		return fmt.Errorf("step %s: unknown kind %q", s.Name, s.Kind)
	}
	if !ok {
		return fmt.Errorf("step %s: payload does not match kind %s", s.Name, s.Kind)
	}
	return nil
}

func (t DiskTarget) valid() bool {
	return (t.Serial != "" || t.WWN != "") && len(t.Serial) <= maxFieldLen && len(t.WWN) <= maxFieldLen
}

// validLabel accepts a file-system label: ext4 allows 16 bytes; Rivet also keeps it to
// characters that need no quoting anywhere.
func validLabel(l string) bool {
	if l == "" || len(l) > 16 {
		return false
	}
	for _, c := range l {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Valid reports whether b is a known boot target.
func (b BootTarget) Valid() bool { return b == BootAgent || b == BootDisk || b == BootNone }

// StepStatus is where one step stands.
type StepStatus string

const (
	StepPending   StepStatus = "pending"
	StepRunning   StepStatus = "running"
	StepSucceeded StepStatus = "succeeded"
	StepSkipped   StepStatus = "skipped" // already done (e.g. the image marker matched)
	StepFailed    StepStatus = "failed"
)

// Progress of a running step.
type Progress struct {
	Done        int64   `json:"done"`
	Total       int64   `json:"total,omitempty"`
	BytesPerSec float64 `json:"bytes_per_sec,omitempty"`
}

// Percent is Done/Total in percent, or -1 when Total is unknown.
func (p *Progress) Percent() float64 {
	if p == nil || p.Total <= 0 {
		return -1
	}
	return 100 * float64(p.Done) / float64(p.Total)
}

// StepReport is what an agent tells the coordinator about a step.
type StepReport struct {
	Generation uint64     `json:"generation"`
	Step       string     `json:"step"`
	Status     StepStatus `json:"status"`
	Attempt    int        `json:"attempt,omitempty"`
	Progress   *Progress  `json:"progress,omitempty"`
	Error      string     `json:"error,omitempty"`
	Hint       string     `json:"hint,omitempty"` // what an operator can do about Error
}

// Validate checks the report.
func (r *StepReport) Validate() error {
	if err := ValidateName("step", r.Step); err != nil {
		return err
	}
	switch r.Status {
	case StepRunning, StepSucceeded, StepSkipped, StepFailed:
	default:
		return fmt.Errorf("status %q: want running, succeeded, skipped or failed", r.Status)
	}
	if r.Status == StepFailed && r.Error == "" {
		return fmt.Errorf("a failed step needs an error")
	}
	if len(r.Error) > 4096 || len(r.Hint) > 1024 {
		return fmt.Errorf("error or hint too long")
	}
	if r.Progress != nil && (r.Progress.Done < 0 || r.Progress.Total < 0 || r.Progress.BytesPerSec < 0) {
		return fmt.Errorf("progress must not be negative")
	}
	return nil
}

// StepState is the coordinator's record of one step of a machine's plan.
type StepState struct {
	Name       string     `json:"name"`
	Status     StepStatus `json:"status"`
	Attempt    int        `json:"attempt,omitempty"`
	Progress   *Progress  `json:"progress,omitempty"`
	Error      string     `json:"error,omitempty"`
	StartedAt  time.Time  `json:"started_at,omitzero"`
	FinishedAt time.Time  `json:"finished_at,omitzero"`
}
