// Package power switches machines on and off and chooses what they boot from. The lab
// drives qemu VMs through QMP (QEMU); metal machines are driven through their BMC over
// IPMI 2.0 (IPMI) or Redfish, all behind the same Driver interface, so the automation
// above it does not change.
package power

import (
	"context"
	"fmt"
)

// BootDevice is what a machine boots from at its next power-on.
type BootDevice string

const (
	// BootPXE boots from the network first and falls back to the disk. Rivet's boot
	// services decide: the agent for new machines, "go to disk" for installed ones.
	BootPXE BootDevice = "pxe"
	// BootDisk boots from the disk only; the network is not tried.
	BootDisk BootDevice = "disk"
)

// Validate returns an error for an unknown boot device.
func (b BootDevice) Validate() error {
	if b != BootPXE && b != BootDisk {
		return fmt.Errorf("boot device %q: want pxe or disk", string(b))
	}
	return nil
}

// State is whether a machine's power is on, as its BMC (or qemu) reports it.
type State string

const (
	StateOn  State = "on"
	StateOff State = "off"
)

// Driver powers one machine. Every method is idempotent: On for a running machine and
// Off for a stopped one succeed and change nothing.
type Driver interface {
	// Status reports whether the machine's power is on.
	Status(ctx context.Context) (State, error)
	// On powers the machine on and returns once its firmware runs.
	On(ctx context.Context) error
	// Off asks the OS to shut down (ACPI soft-off) and cuts the power if the machine is
	// still on after the driver's soft-off timeout; it returns once the power is off.
	Off(ctx context.Context) error
	// Cycle resets a running machine, or powers a stopped one on.
	Cycle(ctx context.Context) error
	// SetBootDevice chooses what the machine boots from from its next power-on on.
	SetBootDevice(ctx context.Context, dev BootDevice) error
}
