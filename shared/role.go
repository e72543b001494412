package shared

import (
	"fmt"
	"regexp"
	"strings"
)

// Role says which machines it wants (Selector), where and what to install (InstallDisk,
// Image) and what part they play in the Swarm. Roles are written as YAML or JSON. A role
// with neither install_disk nor image adopts hosts that already run their OS (the agent
// under systemd): their plan has only the Swarm step.
type Role struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Selector    Selector  `json:"selector"`
	InstallDisk DiskRule  `json:"install_disk"`
	Image       ImageSpec `json:"image"`
	Swarm       SwarmSpec `json:"swarm"`
}

// Selector matches machines by labels and inventory facts. Every set field must match;
// an empty selector matches every machine.
type Selector struct {
	Labels map[string]string `json:"labels,omitempty"` // operator labels only (import, approve)
	// Facts match what the agent reported about itself (--label, rivet.labels=). A
	// machine can say anything of itself: select on facts only where that is harmless.
	Facts           map[string]string `json:"facts,omitempty"`
	MinCores        int               `json:"min_cores,omitempty"`
	MinMemoryGB     int               `json:"min_memory_gb,omitempty"`
	MinDiskGB       int               `json:"min_disk_gb,omitempty"` // some non-removable disk at least this big
	DiskType        string            `json:"disk_type,omitempty"`   // ... of this type (ssd, hdd, nvme, virtio)
	MinNICs         int               `json:"min_nics,omitempty"`    // physical NICs
	MinNICSpeedMbps int               `json:"min_nic_speed_mbps,omitempty"`
	PCIVendor       string            `json:"pci_vendor,omitempty"` // some PCI device from this vendor (name or id)
	Firmware        string            `json:"firmware,omitempty"`   // bios or uefi
}

// DiskRule chooses the install disk. Exactly one of Serial, WWN or Smallest is set.
type DiskRule struct {
	Serial   string        `json:"serial,omitempty"`
	WWN      string        `json:"wwn,omitempty"`
	Smallest *SmallestDisk `json:"smallest,omitempty"`
}

// SmallestDisk picks the smallest non-removable disk of Type at least MinSizeGB big.
// An empty Type means any type.
type SmallestDisk struct {
	Type      string `json:"type,omitempty"`
	MinSizeGB int    `json:"min_size_gb"`
}

// Compression of an OS image on the wire.
const (
	CompressionAuto = "auto" // detected from the stream's magic bytes
	CompressionZstd = "zstd"
	CompressionGzip = "gzip"
	CompressionNone = "none"
)

// ImageSpec names the OS image. URL is a path served by the coordinator
// (e.g. "/v1/images/debian-12.raw.zst") or an absolute https URL.
type ImageSpec struct {
	URL         string `json:"url"`
	SHA256      string `json:"sha256"` // of the uncompressed raw image
	Compression string `json:"compression,omitempty"`
	// RootLabel is the label of the image's root file system, where the handoff step
	// writes the agent's config and machine token; default DefaultRootLabel ("rivet-root").
	RootLabel string `json:"root_label,omitempty"`
}

// Root returns the root file-system label the handoff step looks for.
func (i *ImageSpec) Root() string {
	if i.RootLabel == "" {
		return DefaultRootLabel
	}
	return i.RootLabel
}

// Swarm parts a role may ask for.
const (
	SwarmManager = "manager"
	SwarmWorker  = "worker"
	SwarmAuto    = "auto" // the planner places managers over failure domains
	SwarmNone    = "none"
)

// SwarmSpec is the role's part in the Docker Swarm.
type SwarmSpec struct {
	Role string `json:"role"`
}

var (
	namePattern   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidateName checks a role, label or token name: lowercase DNS label.
func ValidateName(kind, name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%s name %q: want 1-63 lowercase letters, digits and dashes", kind, name)
	}
	return nil
}

// Validate checks the role as a whole.
func (r *Role) Validate() error {
	if err := ValidateName("role", r.Name); err != nil {
		return err
	}
	if len(r.Description) > maxFieldLen {
		return fmt.Errorf("role %s: description too long", r.Name)
	}
	if err := r.Selector.Validate(); err != nil {
		return fmt.Errorf("role %s: selector: %w", r.Name, err)
	}
	if r.Installs() || r.InstallDisk != (DiskRule{}) {
		if err := r.InstallDisk.Validate(); err != nil {
			return fmt.Errorf("role %s: install_disk: %w", r.Name, err)
		}
		if err := r.Image.Validate(); err != nil {
			return fmt.Errorf("role %s: image: %w (a role that installs needs both install_disk and image)", r.Name, err)
		}
	}
	switch r.Swarm.Role {
	case SwarmManager, SwarmWorker, SwarmAuto, SwarmNone:
	case "":
		return fmt.Errorf("role %s: swarm.role is required (manager, worker, auto or none)", r.Name)
	default:
		return fmt.Errorf("role %s: swarm.role %q: want manager, worker, auto or none", r.Name, r.Swarm.Role)
	}
	return nil
}

// Installs reports whether the role installs an OS; false adopts hosts as they are.
func (r *Role) Installs() bool { return r.Image != (ImageSpec{}) }

// Validate checks the selector's values.
func (s *Selector) Validate() error {
	if err := ValidateLabels(s.Labels); err != nil {
		return err
	}
	if err := ValidateLabels(s.Facts); err != nil {
		return fmt.Errorf("facts: %w", err)
	}
	if s.MinCores < 0 || s.MinMemoryGB < 0 || s.MinDiskGB < 0 || s.MinNICs < 0 || s.MinNICSpeedMbps < 0 {
		return fmt.Errorf("minimums must not be negative")
	}
	if err := validateDiskType(s.DiskType); err != nil {
		return err
	}
	if f := s.Firmware; f != "" && f != "bios" && f != "uefi" {
		return fmt.Errorf("firmware %q: want bios or uefi", f)
	}
	if len(s.PCIVendor) > 256 {
		return fmt.Errorf("pci_vendor too long")
	}
	return nil
}

// MaxLabels bounds every label map (a machine's labels, its facts, a selector's).
const MaxLabels = 64

// ValidateLabels checks a label map's size and every key and value.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("at most %d labels", MaxLabels)
	}
	for k, v := range labels {
		if err := ValidateLabel(k, v); err != nil {
			return err
		}
	}
	return nil
}

// ValidateLabel checks one label key and value.
func ValidateLabel(k, v string) error {
	if err := ValidateName("label", k); err != nil {
		return err
	}
	if len(v) > 63 || strings.ContainsAny(v, "\x00\n\r\t") {
		return fmt.Errorf("label %s: value must be at most 63 printable bytes", k)
	}
	return nil
}

func validateDiskType(t string) error {
	switch t {
	case "", "ssd", "hdd", "nvme", "virtio":
		return nil
	}
	return fmt.Errorf("disk type %q: want ssd, hdd, nvme or virtio", t)
}

// Validate checks that exactly one way of choosing the disk is given.
func (d *DiskRule) Validate() error {
	set := 0
	for _, b := range []bool{d.Serial != "", d.WWN != "", d.Smallest != nil} {
		if b {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("set exactly one of serial, wwn or smallest")
	}
	if len(d.Serial) > maxFieldLen || len(d.WWN) > maxFieldLen {
		return fmt.Errorf("serial or wwn too long")
	}
	if d.Smallest != nil {
		if d.Smallest.MinSizeGB < 0 {
			return fmt.Errorf("smallest.min_size_gb must not be negative")
		}
		return validateDiskType(d.Smallest.Type)
	}
	return nil
}

// Validate checks the image URL, digest and compression.
func (i *ImageSpec) Validate() error {
	if i.URL == "" {
		return fmt.Errorf("url is required")
	}
	if !strings.HasPrefix(i.URL, "/") && !strings.HasPrefix(i.URL, "https://") && !strings.HasPrefix(i.URL, "http://") {
		return fmt.Errorf("url %q: want a coordinator path (/v1/images/...) or an http(s) URL", i.URL)
	}
	if len(i.URL) > 2048 {
		return fmt.Errorf("url too long")
	}
	if !sha256Pattern.MatchString(i.SHA256) {
		return fmt.Errorf("sha256 must be 64 lowercase hex digits")
	}
	if i.RootLabel != "" && !validLabel(i.RootLabel) {
		return fmt.Errorf("root_label %q: want 1-16 letters, digits, '-' or '_'", i.RootLabel)
	}
	switch i.Compression {
	case "", CompressionAuto, CompressionZstd, CompressionGzip, CompressionNone:
		return nil
	}
	return fmt.Errorf("compression %q: want auto, zstd, gzip or none", i.Compression)
}
