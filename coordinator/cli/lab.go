package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/lab"
	"github.com/rivetmetal/rivet/shared"
)

func labVerbs() map[string]command {
	return map[string]command{
		"up":             {summary: "bring up N PXE-booting VMs and a coordinator in a network namespace, and follow them to a Swarm", run: labUp},
		"down":           {summary: "remove the lab: VMs, coordinator, namespace, links and its data", run: labDown},
		"power":          {summary: "switch a lab VM at its power strip, past its BMC: on, off (power cut), cycle (reset), kill (as a power loss), status (the BMC's way: rivet machines power)", run: labPower},
		"router-adverts": {summary: "send IPv6 router advertisements on the lab bridge (lab up starts it)", run: labRouterAdverts},
		"cable":          {summary: "plug a lab VM's network cable in or pull it out (rehearse a failed PXE boot)", run: labCable},
		"redfish-bmc":    {summary: "serve a lab VM's Redfish BMC (lab up starts it)", run: labRedfishBMC},
		"bmc-chassis":    {summary: "ipmi_sim's chassis program for a lab VM (lab up configures it)", run: labBMCChassis},
	}
}

// labDir is where the lab keeps its data: RIVET_LAB_DIR or build/lab.
func labDir() string {
	if d := os.Getenv("RIVET_LAB_DIR"); d != "" {
		return d
	}
	return filepath.Join("build", "lab")
}

func labUp(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "lab up", "rivet lab up [--machines N] [--firmware bios|uefi|mixed]")
	cfg := lab.Config{Out: env.Stdout}
	fs.IntVar(&cfg.Machines, "machines", lab.DefaultMachines, "number of VMs")
	fs.StringVar(&cfg.Firmware, "firmware", "bios", "VM firmware: bios, uefi or mixed (alternating)")
	fs.StringVar(&cfg.Dir, "dir", labDir(), "the lab's data directory (env RIVET_LAB_DIR)")
	fs.StringVar(&cfg.Image, "image", filepath.Join("build", "labimage", "rivet-lab.raw.zst"),
		"lab OS image (zstd raw) with IMAGE.sha256 beside it; `make lab-image` builds it")
	fs.StringVar(&cfg.KernelCache, "kernel-cache", filepath.Join("build", "kernel"), "Debian kernel package cache for the agent's initramfs")
	fs.IntVar(&cfg.MemoryMiB, "memory", 1536, "MiB of RAM per VM")
	fs.IntVar(&cfg.DiskGiB, "disk", 8, "GiB of each VM's blank (sparse) disk")
	fs.StringVar(&cfg.Name, "name", lab.DefaultName, "prefix of the lab's namespace, links and VMs (at most 9 characters)")
	fs.StringVar(&cfg.Subnet, "subnet", lab.DefaultSubnet, "the lab network's /24, as three octets")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up following the machines after this long (the lab stays up)")
	follow := fs.Bool("follow", true, "follow the machines to ready and print the phase table")
	logLevel := fs.String("log-level", "warn", "log level of the lab's own logs: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(env, "text", *logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	if cfg.BinDir, err = executableDir(); err != nil {
		return err
	}
	cfg.InstallDebs = findInstallScript(cfg.BinDir)
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return err
	}
	c := l.Config
	fmt.Fprintf(env.Stdout, "\nRivet lab %s is up on %s.0/24 (this host is %s.254 on it).\n"+
		"  status page: %s/status/  (sign in with RIVET_TOKEN from the credentials file;\n"+
		"               the CA is the lab's own: its fingerprint is RIVET_CA_FINGERPRINT there)\n"+
		"  API:         %s\n  credentials: %s\n  watch:       rivet machines watch --env-file %s\n"+
		"  remove:      rivet lab down\n\n",
		c.Name, c.Subnet, c.Subnet, c.APIURL(), c.APIURL(), c.OperatorEnv(), c.OperatorEnv())
	statusPageHint(ctx, env, l)
	if !*follow {
		return nil
	}
	fctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	progress, ferr := l.Follow(fctx, hasImage(c.Image))
	fmt.Fprintln(env.Stdout)
	lab.Report(env.Stdout, progress, l.Started)
	if hasImage(c.Image) {
		lab.Swarm(ctx, env.Stdout, progress)
	}
	if ferr != nil {
		if errors.Is(ferr, context.Canceled) || errors.Is(ferr, context.DeadlineExceeded) {
			fmt.Fprintf(env.Stdout, "\nThe lab stays up: `rivet lab up` again follows it, `rivet lab down` removes it.\n")
		}
		return ferr
	}
	return nil
}

// statusPageHint says so when this coordinator build serves no status pages.
func statusPageHint(ctx context.Context, env *Env, l *lab.Lab) {
	resp, err := l.Client.Open(ctx, "/status/", nil)
	if err != nil {
		if shared.StatusOf(err) == http.StatusNotFound {
			fmt.Fprintf(env.Stdout, "  (no status pages in this build: follow with `rivet machines watch`)\n")
		}
		return
	}
	resp.Body.Close()
}

func hasImage(path string) bool {
	_, err := os.Stat(path)
	return path != "" && err == nil
}

func labDown(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "lab down", "rivet lab down")
	dir := fs.String("dir", labDir(), "the lab's data directory (env RIVET_LAB_DIR)")
	name := fs.String("name", lab.DefaultName, "the lab's name, if its data directory is gone")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := lab.Down(ctx, lab.Config{Dir: *dir, Name: *name}); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "lab removed: VMs, coordinator, namespace, links and %s\n", *dir)
	return nil
}

func labPower(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "lab power", "rivet lab power VM on|off|cycle|kill|status   (VM: 1, 2, ... or vm1, vm2, ...)")
	dir := fs.String("dir", labDir(), "the lab's data directory (env RIVET_LAB_DIR)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errors.New("want a VM and an action")
	}
	n, err := labVMNumber(fs.Arg(0))
	if err != nil {
		return err
	}
	vm, err := lab.Power(lab.Config{Dir: *dir}, n)
	if err != nil {
		return err
	}
	switch fs.Arg(1) {
	case "on":
		err = vm.On(ctx)
	case "off":
		err = vm.Off(ctx)
	case "cycle":
		err = vm.Cycle(ctx)
	case "kill":
		err = vm.Kill(ctx)
	case "status":
	default:
		return fmt.Errorf("action %q: want on, off, cycle, kill or status", fs.Arg(1))
	}
	if err != nil {
		return err
	}
	st, err := vm.Guest(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "vm%d: %s (pid %d)\n", n, st.Status, vm.PID())
	return nil
}

func labRouterAdverts(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "lab router-adverts", "rivet lab router-adverts --interface BRIDGE --prefix PREFIX/64")
	iface := fs.String("interface", "", "interface to advertise on")
	prefix := fs.String("prefix", "fd00:232:80::/64", "IPv6 /64 to advertise")
	fs.String("lab-dir", "", "the lab's directory (marks the process as the lab's)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *iface == "" {
		return errors.New("--interface is required")
	}
	return lab.AdvertiseRouter(ctx, *iface, *prefix, time.Second)
}

func labCable(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "lab cable", "rivet lab cable VM plug|unplug   (VM: 1, 2, ... or vm1, vm2, ...)")
	dir := fs.String("dir", labDir(), "the lab's data directory (env RIVET_LAB_DIR)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 || (fs.Arg(1) != "plug" && fs.Arg(1) != "unplug") {
		fs.Usage()
		return errors.New("want a VM and plug or unplug")
	}
	n, err := labVMNumber(fs.Arg(0))
	if err != nil {
		return err
	}
	if err := lab.Plug(ctx, lab.Config{Dir: *dir}, n, fs.Arg(1) == "plug"); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "vm%d: cable %sged\n", n, fs.Arg(1))
	return nil
}

// labVMNumber reads a lab VM as 1, 2, ... or vm1, vm2, ...
func labVMNumber(arg string) (int, error) {
	var n int
	if _, err := fmt.Sscanf(strings.TrimPrefix(arg, "vm"), "%d", &n); err != nil || n < 1 {
		return 0, fmt.Errorf("VM %q: want a number such as 1 or vm1", arg)
	}
	return n, nil
}

func labRedfishBMC(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "lab redfish-bmc", "rivet lab redfish-bmc --dir DIR --vm N --listen ADDR:PORT")
	dir := fs.String("dir", labDir(), "the lab's data directory")
	vm := fs.Int("vm", 0, "the lab VM behind this BMC")
	listen := fs.String("listen", "", "address:port to serve HTTPS on")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *vm < 1 || *listen == "" {
		return errors.New("--vm and --listen are required")
	}
	logger, err := newLogger(env, "text", *logLevel)
	if err != nil {
		return err
	}
	return lab.ServeRedfishBMC(ctx, lab.Config{Dir: *dir, Logger: logger}, *vm, *listen)
}

// labBMCChassis is run by a lab VM's ipmi_sim for each power or boot-device request.
func labBMCChassis(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "lab bmc-chassis", "rivet lab bmc-chassis --dir D --vm N get NAME... | set NAME VALUE...")
	dir := fs.String("dir", labDir(), "the lab's data directory")
	vm := fs.Int("vm", 0, "the VM's number")
	if err := parse(fs, args); err != nil {
		return err
	}
	return lab.Chassis(ctx, lab.Config{Dir: *dir}, *vm, fs.Args(), env.Stdout)
}

func executableDir() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		return "", err
	}
	return filepath.Dir(exe), nil
}

// findInstallScript finds .ci/install-debs in the working directory or beside bin/.
func findInstallScript(binDir string) string {
	for _, p := range []string{filepath.Join(".ci", "install-debs"), filepath.Join(binDir, "..", ".ci", "install-debs")} {
		if _, err := os.Stat(p); err == nil {
			abs, _ := filepath.Abs(p)
			return abs
		}
	}
	return ""
}
