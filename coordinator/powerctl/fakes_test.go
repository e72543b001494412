package powerctl

import (
	"context"
	"fmt"
	"sync"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

const secret = "s3cret-bmc-pw"

// fakeDriver is one BMC: its power state, its boot device and the calls it got.
type fakeDriver struct {
	mu    sync.Mutex
	on    bool
	boot  power.BootDevice
	calls []string
	fail  error // every call fails with this
}

func (d *fakeDriver) call(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, name)
	return d.fail
}

func (d *fakeDriver) Status(ctx context.Context) (power.State, error) {
	if err := d.call("status"); err != nil {
		return "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.on {
		return power.StateOn, nil
	}
	return power.StateOff, nil
}
func (d *fakeDriver) On(ctx context.Context) error  { return d.set("on", true) }
func (d *fakeDriver) Off(ctx context.Context) error { return d.set("off", false) }
func (d *fakeDriver) Cycle(ctx context.Context) error {
	return d.set("cycle", true)
}
func (d *fakeDriver) SetBootDevice(ctx context.Context, dev power.BootDevice) error {
	if err := d.call("boot:" + string(dev)); err != nil {
		return err
	}
	d.mu.Lock()
	d.boot = dev
	d.mu.Unlock()
	return nil
}
func (d *fakeDriver) set(name string, on bool) error {
	if err := d.call(name); err != nil {
		return err
	}
	d.mu.Lock()
	d.on = on
	d.mu.Unlock()
	return nil
}

// fakeFleet resolves targets and hands out their fake drivers, keyed by BMC address.
type fakeFleet struct {
	targets []Target
	drivers map[string]*fakeDriver
}

func newFleet(n int) *fakeFleet {
	f := &fakeFleet{drivers: map[string]*fakeDriver{}}
	for i := range n {
		addr := fmt.Sprintf("10.0.0.%d", i+1)
		rack := fmt.Sprintf("r%d", i%2)
		f.targets = append(f.targets, Target{MachineID: shared.MachineID(fmt.Sprintf("m%d", i)), Key: fmt.Sprintf("row%d", i),
			Hostname: fmt.Sprintf("node%d", i), Labels: map[string]string{"rack": rack}, State: shared.StateReady,
			BMC: shared.BMC{Driver: shared.BMCIPMI, Address: addr, User: "admin", Password: secret}})
		f.drivers[addr] = &fakeDriver{}
	}
	return f
}

func (f *fakeFleet) PowerTarget(ref string) (Target, error) {
	for _, t := range f.targets {
		if string(t.MachineID) == ref || t.Key == ref || t.Hostname == ref {
			return t, nil
		}
	}
	return Target{}, fmt.Errorf("%q: %w", ref, ErrUnknownTarget)
}

func (f *fakeFleet) PowerTargets(sel map[string]string, all bool) ([]Target, error) {
	var out []Target
next:
	for _, t := range f.targets {
		for k, v := range sel {
			if t.Labels[k] != v {
				continue next
			}
		}
		out = append(out, t)
	}
	return out, nil
}

func (f *fakeFleet) driver(b shared.BMC) (power.Driver, error) {
	if b.Password != secret {
		return nil, fmt.Errorf("fake: the driver got the wrong password")
	}
	return f.drivers[b.Address], nil
}

// fakeApplier applies commands to a real store, as the FSM would.
type fakeApplier struct {
	mu    sync.Mutex
	store *state.Store
	index uint64
	cmds  []state.Command
}

func (a *fakeApplier) Apply(ctx context.Context, cmd state.Command) (state.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.index++
	a.cmds = append(a.cmds, cmd)
	switch c := cmd.(type) {
	case state.PowerRecord:
		return a.store.ApplyPowerRecord(c, a.index)
	case state.PowerRecover:
		return a.store.ApplyPowerRecover(c, a.index)
	case state.Register:
		return a.store.ApplyRegister(c, a.index)
	case state.Checkin:
		return a.store.ApplyCheckin(c, a.index)
	case state.PutExpected:
		return a.store.ApplyPutExpected(c, a.index)
	}
	return state.Result{}, fmt.Errorf("fake applier: %T", cmd)
}
