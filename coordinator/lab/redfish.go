package lab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/internal/atomicfile"
	"github.com/rivetmetal/rivet/internal/redfishbmc"
)

// ServeRedfishBMC is `rivet lab redfish-bmc`: the Redfish BMC of lab VM vm, listening on
// addr until ctx ends. Behind it is the VM's qemu driver, with a cold reset (see
// coldReset). It writes its certificate's fingerprint for `lab up` to pin in the import.
func ServeRedfishBMC(ctx context.Context, cfg Config, vm int, addr string) error {
	drv, err := Power(cfg, vm)
	if err != nil {
		return err
	}
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	password, err := cfg.BMCPassword()
	if err != nil {
		return err
	}
	bmc, err := redfishbmc.New(redfishbmc.Config{Addr: addr, User: bmcUser, Password: password,
		SystemID: cfg.vmName(vm), Chassis: labChassis{redfishbmc.DriverChassis{Driver: drv}, drv}, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	pin := cfg.redfishPinFile(vm)
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(pin, []byte(bmc.Fingerprint()+"\n"), 0o644); err != nil {
		return err
	}
	cfg.Logger.Info("redfish BMC listening", "vm", vm, "url", bmc.URL(), "tls_sha256", bmc.Fingerprint())
	go func() { <-ctx.Done(); _ = bmc.Close() }()
	if err := bmc.Serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("the Redfish BMC of vm%d: %w", vm, err)
	}
	return nil
}

// labChassis is a lab VM behind the Redfish BMC. Its reset powers it off and on: qemu's
// own reset keeps the boot order it started with, but a BMC's reset boots the one-time
// device set since, which is what a recovery (PXE once, then cycle) relies on. Its
// graceful shutdown presses the ACPI power button and returns: the OS decides, and
// Rivet's driver cuts the power after its soft-off timeout if the OS does not.
type labChassis struct {
	redfishbmc.DriverChassis // power state, on, off (a cut), boot device
	vm                       *power.QEMU
}

func (c labChassis) Shutdown(ctx context.Context) error {
	return c.vm.Powerdown(ctx)
}

func (c labChassis) Reset(ctx context.Context) error {
	if err := c.Driver.Off(ctx); err != nil {
		return err
	}
	return c.Driver.On(ctx)
}
