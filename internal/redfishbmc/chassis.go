package redfishbmc

import (
	"context"
	"fmt"
	"sync"

	"github.com/rivetmetal/rivet/coordinator/power"
)

// Boot override targets the service accepts (the DMTF BootSource values Rivet uses).
const (
	BootPxe = "Pxe" // the network
	BootHdd = "Hdd" // the disk
)

// Chassis is the machine behind the BMC: what the Redfish service reads and switches.
type Chassis interface {
	// PowerState reports whether the machine's power is on.
	PowerState(ctx context.Context) (on bool, err error)
	// SetPower switches the power at once (On, ForceOn, ForceOff): no word to the OS.
	SetPower(ctx context.Context, on bool) error
	// Shutdown asks the OS to shut down (GracefulShutdown). It may return before the
	// power is off, or the OS may ignore it: the caller polls PowerState.
	Shutdown(ctx context.Context) error
	// Reset restarts a running machine (ForceRestart) or powers a stopped one on.
	Reset(ctx context.Context) error
	// SetBootOnce makes the next boot use device (BootPxe or BootHdd).
	SetBootOnce(ctx context.Context, device string) error
}

// MemChassis is a machine that exists only in memory: for tests and demos. Its zero
// value is a machine that is off and whose OS obeys a shutdown request.
type MemChassis struct {
	mu sync.Mutex
	on bool
	// ignoreShutdown: the OS ignores ACPI shutdown requests (hung, or none installed).
	ignoreShutdown bool
	bootOnce       string
	log            []string
}

// NewMemChassis returns a machine in the given power state.
func NewMemChassis(on bool) *MemChassis { return &MemChassis{on: on} }

// IgnoreShutdown makes the machine's OS ignore (ignore true) or obey shutdown requests.
func (c *MemChassis) IgnoreShutdown(ignore bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ignoreShutdown = ignore
}

// On reports whether the power is on.
func (c *MemChassis) On() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on
}

// BootOnce is the device the next boot uses ("" when none was chosen or it was used).
func (c *MemChassis) BootOnce() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bootOnce
}

// Log is every change asked of the machine, oldest first: "on", "off", "shutdown",
// "reset", "boot Pxe". Reads are not logged.
func (c *MemChassis) Log() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

func (c *MemChassis) PowerState(context.Context) (bool, error) { return c.On(), nil }

func (c *MemChassis) SetPower(_ context.Context, on bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.log = append(c.log, "on")
		c.powerOn()
	} else {
		c.log = append(c.log, "off")
		c.on = false
	}
	return nil
}

// powerOn starts the machine, which uses (and so clears) the one-time boot device.
func (c *MemChassis) powerOn() {
	if !c.on {
		c.bootOnce = ""
	}
	c.on = true
}

func (c *MemChassis) Shutdown(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, "shutdown")
	if !c.ignoreShutdown {
		c.on = false
	}
	return nil
}

func (c *MemChassis) Reset(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, "reset")
	c.on = false // the firmware starts again and boots the one-time device
	c.powerOn()
	return nil
}

func (c *MemChassis) SetBootOnce(_ context.Context, device string) error {
	if device != BootPxe && device != BootHdd {
		return fmt.Errorf("boot device %q: want %s or %s", device, BootPxe, BootHdd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, "boot "+device)
	c.bootOnce = device
	return nil
}

// DriverChassis puts a machine that Rivet drives some other way (a power.QEMU VM in the
// lab) behind the Redfish service, so that Rivet's Redfish driver can drive it: the
// other protocol (QMP) stays inside the BMC.
type DriverChassis struct {
	Driver power.Driver
}

func (c DriverChassis) PowerState(ctx context.Context) (bool, error) {
	st, err := c.Driver.Status(ctx)
	return st == power.StateOn, err
}

func (c DriverChassis) SetPower(ctx context.Context, on bool) error {
	if on {
		return c.Driver.On(ctx)
	}
	return c.Driver.Off(ctx)
}

// Shutdown is the driver's Off, which asks the OS first where the driver can and cuts
// the power after its own soft-off timeout; it returns once the power is off.
func (c DriverChassis) Shutdown(ctx context.Context) error { return c.Driver.Off(ctx) }

func (c DriverChassis) Reset(ctx context.Context) error { return c.Driver.Cycle(ctx) }

func (c DriverChassis) SetBootOnce(ctx context.Context, device string) error {
	switch device {
	case BootPxe:
		return c.Driver.SetBootDevice(ctx, power.BootPXE)
	case BootHdd:
		return c.Driver.SetBootDevice(ctx, power.BootDisk)
	}
	return fmt.Errorf("boot device %q: want %s or %s", device, BootPxe, BootHdd)
}
