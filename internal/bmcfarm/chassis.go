package bmcfarm

import (
	"context"
	"sync"

	"github.com/bougou/go-ipmi/pkg/hal"
	"github.com/bougou/go-ipmi/pkg/types"
)

// Chassis is a machine's power and boot flags as its BMC sees them, in memory. Power
// changes take effect at once: the farm measures the path to the BMC, not a power supply.
type Chassis struct {
	mu       sync.Mutex
	on       bool
	cycles   int // power cycles while on
	resets   int // hard and soft resets while on
	boot     *types.BootOptionParam_BootFlags
	bootAck  *types.BootOptionParam_BootInfoAcknowledge
	identify uint8
}

var _ hal.ChassisHAL = (*Chassis)(nil)

// IsOn reports whether the machine's power is on.
func (c *Chassis) IsOn() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on
}

// Set switches the power directly (not over IPMI).
func (c *Chassis) Set(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = on
}

// Cycles is how many power cycles the BMC carried out (a cycle of a machine that is off
// does nothing and is not counted, as IPMI's Chassis Control specifies).
func (c *Chassis) Cycles() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cycles
}

// BootFlags is the last boot flags the BMC was given, nil if none.
func (c *Chassis) BootFlags() *types.BootOptionParam_BootFlags {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.boot == nil {
		return nil
	}
	cp := *c.boot
	return &cp
}

// PowerState is hal.ChassisHAL's: what Get Chassis Status reports.
func (c *Chassis) PowerState(context.Context) (bool, error) { return c.IsOn(), nil }

// SetPower is hal.ChassisHAL's: Chassis Control power up and power down.
func (c *Chassis) SetPower(_ context.Context, on bool) error {
	c.Set(on)
	return nil
}

// PowerCycle is hal.ChassisHAL's: off and on again at once, nothing when off.
func (c *Chassis) PowerCycle(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.on {
		c.cycles++
	}
	return nil
}

// ColdReset is hal.ChassisHAL's (hard reset): the power stays as it is.
func (c *Chassis) ColdReset(context.Context) error { return c.reset() }

// WarmReset is hal.ChassisHAL's (soft shutdown request): the power stays as it is.
func (c *Chassis) WarmReset(context.Context) error { return c.reset() }

func (c *Chassis) reset() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.on {
		c.resets++
	}
	return nil
}

// Identify is hal.ChassisHAL's: the identify LED, remembered only.
func (c *Chassis) Identify(_ context.Context, seconds uint8) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.identify = seconds
	return nil
}

// IntrusionState is hal.ChassisHAL's: the farm's chassis have no intrusion switch.
func (c *Chassis) IntrusionState(context.Context) (bool, error) { return false, hal.ErrNotSupported }

// SetBootFlags is hal.ChassisHAL's: Set System Boot Options parameter 5.
func (c *Chassis) SetBootFlags(_ context.Context, flags *types.BootOptionParam_BootFlags) error {
	if flags == nil {
		return hal.ErrNotSupported
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := *flags
	c.boot = &cp
	return nil
}

// GetBootFlags is hal.ChassisHAL's: Get System Boot Options parameter 5.
func (c *Chassis) GetBootFlags(context.Context) (*types.BootOptionParam_BootFlags, error) {
	if f := c.BootFlags(); f != nil {
		return f, nil
	}
	return nil, hal.ErrNotSupported
}

// SetBootInfoAcknowledge is hal.ChassisHAL's: parameter 4, remembered.
func (c *Chassis) SetBootInfoAcknowledge(_ context.Context, ack *types.BootOptionParam_BootInfoAcknowledge) error {
	if ack == nil {
		return hal.ErrNotSupported
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := *ack
	c.bootAck = &cp
	return nil
}

// GetBootInfoAcknowledge is hal.ChassisHAL's: parameter 4 as last set.
func (c *Chassis) GetBootInfoAcknowledge(context.Context) (*types.BootOptionParam_BootInfoAcknowledge, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bootAck == nil {
		return nil, hal.ErrNotSupported
	}
	cp := *c.bootAck
	return &cp, nil
}

// farmHAL is a BMC's hardware: a chassis and nothing else (no sensors, storage, network
// configuration, GPIO, I2C or serial console; the server answers "not supported").
type farmHAL struct{ chassis *Chassis }

var _ hal.HAL = (*farmHAL)(nil)

func (h *farmHAL) Chassis() hal.ChassisHAL { return h.chassis }
func (h *farmHAL) Sensors() hal.SensorHAL  { return nil }
func (h *farmHAL) Storage() hal.StorageHAL { return nil }
func (h *farmHAL) Network() hal.NetworkHAL { return nil }
func (h *farmHAL) GPIO() hal.GPIOHAL       { return nil }
func (h *farmHAL) I2C() hal.I2CHAL         { return nil }
func (h *farmHAL) Console() hal.ConsoleHAL { return nil }
func (h *farmHAL) Close() error            { return nil }
