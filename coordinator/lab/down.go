package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/coordinator/power"
)

// Down removes the lab: VMs, BMCs, coordinator, router advertiser, namespace, bridge, taps,
// veth, mounts and Dir. It works on a half-made or half-removed lab too, and reports
// anything it could not remove.
func Down(ctx context.Context, cfg Config) error {
	if cfg.Dir == "" {
		return errors.New("lab: Dir is required")
	}
	if st, err := readState(filepath.Join(cfg.Dir, "lab.json")); err == nil {
		cfg.Name, cfg.Subnet = st.Name, st.Subnet // the lab as it was made
	}
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	c := &cfg
	var errs []error
	// The coordinator and the BMCs first: neither may power a VM on again (a recovery
	// cycle) while the VMs go down.
	names := []string{"coordinator", "router-adverts"}
	for _, vm := range c.existingVMs() {
		names = append(names, c.bmcChildName(vmIndex(vm)))
	}
	for _, name := range names {
		if err := c.stop(ctx, name, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("stopping the lab's %s: %w", name, err))
		}
	}
	for _, vm := range c.existingVMs() {
		if err := vm.Off(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, pid := range c.processes() { // anything else that names the lab's directory
		if err := c.terminate(ctx, pid, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.networkDown(ctx); err != nil {
		errs = append(errs, err)
	}
	c.unmountAll()
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, err)
	}
	if left := c.Leftovers(ctx); len(left) > 0 {
		errs = append(errs, fmt.Errorf("left behind: %s", strings.Join(left, ", ")))
	}
	return errors.Join(errs...)
}

// existingVMs returns the drivers of the VMs that have a directory in Dir.
func (c *Config) existingVMs() []*power.QEMU {
	entries, _ := os.ReadDir(filepath.Join(c.Dir, "vms"))
	st, _ := readState(c.stateFile())
	var vms []*power.QEMU
	for _, e := range entries {
		i, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "vm"))
		if err != nil || !e.IsDir() {
			continue
		}
		fw := power.FirmwareBIOS
		if st != nil && st.Firmwares[i] != "" {
			fw = st.Firmwares[i]
		}
		if drv, err := power.NewQEMU(c.machine(i, fw)); err == nil {
			vms = append(vms, drv)
		}
	}
	return vms
}

// vmIndex is the number of a lab VM from its directory (…/vms/vmN).
func vmIndex(vm *power.QEMU) int {
	i, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(vm.Config().Dir), "vm"))
	return i
}

// unmountAll detaches any mount under Dir, deepest first. The lab makes none itself (the
// coordinator and qemu run in the private mount namespaces of `ip netns exec`); this is
// for an operator who looked inside a disk image and forgot it mounted.
func (c *Config) unmountAll() {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], c.Dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		_ = unix.Unmount(p, unix.MNT_DETACH)
	}
}

// Power returns the power driver of VM number vm of the lab in cfg.Dir.
func Power(cfg Config, vm int) (*power.QEMU, error) {
	st, err := readState(filepath.Join(cfg.Dir, "lab.json"))
	if err != nil {
		return nil, fmt.Errorf("no lab in %s: %w", cfg.Dir, err)
	}
	cfg.Name, cfg.Subnet = st.Name, st.Subnet
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	fw, ok := st.Firmwares[vm]
	if !ok {
		return nil, fmt.Errorf("the lab in %s has no vm%d", cfg.Dir, vm)
	}
	return power.NewQEMU(cfg.machine(vm, fw))
}
