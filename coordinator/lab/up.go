package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/shared"
)

// Lab is a running lab as Up left it.
type Lab struct {
	Config   Config
	Client   *shared.Client // the coordinator's API with the operator's admin token
	Machines []*VM
	Started  time.Time // when Up began
}

// VM is one lab machine.
type VM struct {
	Index     int
	Power     *power.QEMU
	PoweredOn time.Time // when this Up powered it on; zero if it was running already
}

// MAC returns the VM's NIC address.
func (v *VM) MAC() string { return v.Power.Config().MAC }

// Name returns the VM's name.
func (v *VM) Name() string { return v.Power.Config().Name }

// Up brings the lab up, or finds it up and adds what is missing (more machines, a
// stopped VM or coordinator): running it twice is safe. It returns once every VM runs;
// Follow then watches them to ready.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, a bridge, taps): run it with sudo")
	}
	l := &Lab{Config: cfg, Started: time.Now()}
	c := &l.Config
	if err := c.ensurePackages(ctx); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	st, err := c.loadState()
	if err != nil {
		return nil, err
	}
	if err := c.ensureBootFiles(ctx); err != nil {
		return nil, err
	}
	imageDir, spec, err := c.imageSpec()
	if err != nil {
		return nil, err
	}
	if err := c.networkUp(ctx); err != nil {
		return nil, err
	}
	var coordinator int
	for _, ch := range []child{c.routerAdvertsChild(), c.coordinatorChild(imageDir)} {
		pid, started, err := c.start(ch)
		if err != nil {
			return nil, err
		}
		coordinator = pid
		verb := "reusing"
		if started {
			verb = "started"
		}
		fmt.Fprintf(c.Out, "%-15s %s (pid %d, log %s)\n", ch.name, verb, pid, c.logFile(ch.name))
	}
	if l.Client, err = c.waitCoordinator(ctx, coordinator); err != nil {
		return nil, err
	}
	if spec != nil {
		if err := c.applyRole(ctx, l.Client, spec); err != nil {
			return nil, err
		}
	} else {
		fmt.Fprintf(c.Out, "no lab image (%s): machines will register and wait for a role; "+
			"build it with `make lab-image`\n", orNone(c.Image))
	}
	// The rack's cabling first (a tap and a disk per VM), then its BMCs, the import
	// and the power-on through the BMCs, as on metal.
	var off []string
	for i := 1; i <= c.Machines; i++ {
		vm, err := c.prepareVM(ctx, st, i)
		if err != nil {
			return nil, err
		}
		l.Machines = append(l.Machines, vm)
		if err := st.write(c.stateFile()); err != nil {
			return nil, err
		}
		if vm.Power.PID() == 0 {
			off = append(off, vm.Name())
		}
	}
	bmcs, err := c.startBMCs(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.importMachines(ctx, l.Client, bmcs); err != nil {
		return nil, err
	}
	if err := c.powerOnThroughBMCs(ctx, l, off); err != nil {
		return nil, err
	}
	return l, nil
}

// loadState reads the lab's record, refusing a directory that holds another lab.
func (c *Config) loadState() (*state, error) {
	st, err := readState(c.stateFile())
	if errors.Is(err, os.ErrNotExist) {
		st = &state{Name: c.Name, Subnet: c.Subnet, Firmwares: map[int]string{}}
		return st, st.write(c.stateFile())
	}
	if err != nil {
		return nil, err
	}
	if st.Name != c.Name || st.Subnet != c.Subnet {
		return nil, fmt.Errorf("%s holds the lab %s on %s.0/24, not %s on %s.0/24: run `rivet lab down` first",
			c.Dir, st.Name, st.Subnet, c.Name, c.Subnet)
	}
	if st.Firmwares == nil {
		st.Firmwares = map[int]string{}
	}
	return st, nil
}

// imageSpec returns the image directory the coordinator serves and the role's image.
func (c *Config) imageSpec() (string, *shared.ImageSpec, error) {
	if c.Image == "" {
		return "", nil, nil
	}
	image, err := filepath.Abs(c.Image)
	if err != nil {
		return "", nil, err
	}
	if _, err := os.Stat(image); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			c.Image = image
			return "", nil, nil
		}
		return "", nil, err
	}
	digest, err := imageDigest(image)
	if err != nil {
		return "", nil, err
	}
	// The coordinator serves a copy in the lab's directory: rebuilding the image while the
	// lab runs must not change the bytes under a machine that is writing them.
	dir := filepath.Join(c.Dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	served := filepath.Join(dir, filepath.Base(image))
	if have, err := imageDigest(served); err != nil || have != digest {
		fmt.Fprintf(c.Out, "copying the lab image into %s ...\n", dir)
		for _, f := range []string{image, image + ".sha256"} {
			if err := copyFile(f, filepath.Join(dir, filepath.Base(f))); err != nil {
				return "", nil, err
			}
		}
		if digest, err = imageDigest(served); err != nil {
			return "", nil, err
		}
	}
	return dir, &shared.ImageSpec{URL: "/v1/images/" + filepath.Base(image), SHA256: digest,
		Compression: shared.CompressionAuto}, nil
}

// waitCoordinator waits for the coordinator's credentials and a healthy API.
func (c *Config) waitCoordinator(ctx context.Context, pid int) (*shared.Client, error) {
	deadline := time.Now().Add(90 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		// Whether the process lives, not whether it is the lab's: right after the start its
		// command line may still be ip's, or empty while it execs.
		if !power.ProcessAlive(pid) {
			return nil, fmt.Errorf("the lab's coordinator exited; its log:\n%s", tail(c.logFile("coordinator"), 3000))
		}
		client, err := c.Client()
		if err == nil {
			var h *shared.Health
			if h, err = client.Health(ctx); err == nil && h.Status == shared.HealthOK {
				return client, nil
			} else if err == nil {
				err = fmt.Errorf("coordinator is %s", h.Status)
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	// A refusal from a coordinator that runs is most often a route: say which one is taken.
	route, _ := exec.CommandContext(ctx, "ip", "-4", "route", "get", c.bridgeIP()).CombinedOutput()
	return nil, fmt.Errorf("the lab's coordinator did not become healthy in 90 s: %v (the host's route to it: %s); its log:\n%s",
		lastErr, strings.TrimSpace(string(route)), tail(c.logFile("coordinator"), 3000))
}

// Client returns an API client with the admin token the coordinator wrote.
func (c *Config) Client() (*shared.Client, error) {
	creds, err := shared.ReadOperatorCredentials(c.OperatorEnv())
	if err != nil {
		return nil, err
	}
	return shared.NewClient(shared.ClientConfig{URLs: []string{c.APIURL()}, Token: creds.Token,
		CAFingerprint: creds.CAFingerprint, Timeout: 10 * time.Second})
}

// applyRole applies the lab's default role: every machine installs the lab image on its
// virtio disk (named by serial) and joins the Swarm as the planner places it.
func (c *Config) applyRole(ctx context.Context, client *shared.Client, image *shared.ImageSpec) error {
	role := shared.Role{Name: roleName, Description: "every lab VM: the lab image on its virtio disk, then the Swarm",
		InstallDisk: shared.DiskRule{Serial: diskSerial}, Image: *image, Swarm: shared.SwarmSpec{Role: shared.SwarmAuto}}
	// Applying it again (a second lab up, a rebuilt image) is a plain `rivet roles apply`:
	// ready machines keep their plan (seen by hand: a rebuilt image reinstalled none).
	if _, err := client.ApplyRoles(ctx, &shared.RoleList{Roles: []shared.Role{role}}, false); err != nil {
		return fmt.Errorf("applying the lab role: %w", err)
	}
	fmt.Fprintf(c.Out, "role %s applied: image %s (sha256 %s…), disk serial %s, swarm auto\n",
		roleName, image.URL, image.SHA256[:12], diskSerial)
	return nil
}

// labRacks is how many racks the lab's import spreads its VMs over, so that Swarm
// managers are placed as on metal (one per rack).
const labRacks = 3

// prepareVM gives VM i its tap and disk and its power driver, recording the firmware
// it is created with.
func (c *Config) prepareVM(ctx context.Context, st *state, i int) (*VM, error) {
	fw := st.Firmwares[i]
	if fw == "" {
		fw = c.firmwareOf(i)
		st.Firmwares[i] = fw
	}
	mc := c.machine(i, fw)
	if err := c.tapUp(ctx, i); err != nil {
		return nil, err
	}
	if err := c.ensureDisk(mc.Disk); err != nil {
		return nil, err
	}
	drv, err := power.NewQEMU(mc)
	if err != nil {
		return nil, err
	}
	if drv.PID() != 0 {
		fmt.Fprintf(c.Out, "%-15s running already (%s, %s)\n", mc.Name, fw, mc.MAC)
	}
	return &VM{Index: i, Power: drv}, nil
}

// powerOnThroughBMCs powers the named VMs on with PXE once through the coordinator's
// API, which sends the command to each VM's BMC: `rivet machines power ... on --pxe-once`.
func (c *Config) powerOnThroughBMCs(ctx context.Context, l *Lab, names []string) error {
	if len(names) == 0 {
		return nil
	}
	req := &shared.PowerBatchRequest{PowerRequest: shared.PowerRequest{Action: shared.PowerOn, PXEOnce: true},
		Refs: names, Batch: shared.DefaultPowerBatch}
	byName := map[string]*VM{}
	for _, vm := range l.Machines {
		byName[vm.Name()] = vm
	}
	res, err := l.Client.PowerBatch(ctx, req, func(o shared.PowerOutcome) {
		vm := byName[o.Ref]
		if !o.OK || vm == nil {
			fmt.Fprintf(c.Out, "%-15s power on failed: %s (BMC %s)\n", o.Ref, o.Error, o.BMC)
			return
		}
		vm.PoweredOn = o.Started
		mc := vm.Power.Config()
		fmt.Fprintf(c.Out, "%-15s powered on by its BMC (%s; %s, %s, %d MiB, %d GiB disk; console %s)\n",
			o.Ref, o.BMC, mc.Firmware, mc.MAC, mc.MemoryMiB, c.DiskGiB, vm.Power.SerialLog())
	})
	if err != nil {
		return fmt.Errorf("powering the lab's VMs on through their BMCs: %w", err)
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d of %d VMs did not power on through their BMCs (see above; the BMC logs are %s)",
			res.Failed, len(names), filepath.Join(c.Dir, "bmc-vm*.log"))
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none given"
	}
	return s
}

// tail returns the end of a log file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}
