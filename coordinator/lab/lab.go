// Package lab runs Rivet's lab on one Linux box: a network namespace with a bridge, a
// coordinator inside it (the embedded single-node store, full DHCP on the bridge), and N
// qemu VMs with blank disks that PXE-boot, install the lab image and form a Docker
// Swarm — the same binaries, roles and plan as metal; only the power driver (qemu over
// QMP) and the network (a bridge) differ.
//
// Everything the lab creates is named after Config.Name (default "rvlab") and lives in
// Config.Dir, so that Down, in any later process, finds and removes all of it.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/internal/netclaim"
)

// Config describes a lab. The zero value of every field but Dir and BinDir means the default.
type Config struct {
	Name     string // prefix of every namespace, link and VM name; default "rvlab" (≤ 9 characters)
	Subnet   string // first three octets of the lab's /24; default "10.232.80"
	Dir      string // the lab's data: coordinator, VMs, disks, logs (removed by Down)
	BinDir   string // rivet, rivet-agent and rivet-mkinitramfs
	Machines int    // VMs; default 3
	Firmware string // bios, uefi or mixed (alternating, BIOS first); default bios
	// MemoryMiB per VM (default 1536) and DiskGiB of each blank sparse disk (default 8).
	MemoryMiB, DiskGiB int
	// Image is the lab OS image (raw, zstd-compressed) with IMAGE.sha256 beside it; ""
	// runs the lab without one: machines register and wait for a role.
	Image       string
	KernelCache string // the Debian kernel package cache of rivet-mkinitramfs; default build/kernel
	// InstallDebs is the script that installs missing Debian packages (.ci/install-debs).
	InstallDebs string
	Out         io.Writer // progress for the operator
	Logger      *slog.Logger
	// Unplugged are VMs (numbers) whose network cable Up leaves out: a blocked first
	// network boot, to rehearse the coordinator's recovery (`rivet lab cable` plugs it).
	Unplugged []int
	// Claim, if set, records the lab's namespace and host link before they are made, so
	// that the next claim's sweep removes them if this process dies first (tests; an
	// operator's lab outlives `rivet lab up` and has none).
	Claim *netclaim.Claim
}

// Defaults.
const (
	DefaultName     = "rvlab"
	DefaultSubnet   = "10.232.80"
	DefaultMachines = 3
	diskSerial      = "RVLABDISK" // every VM's install disk: the default role names it
	roleName        = "lab"
	apiPort         = 7443
	bootHTTPPort    = 8080
	// labRecoverAfter is the lab coordinator's --power-recover-after.
	labRecoverAfter = 5 * time.Minute
)

func (c *Config) setDefaults() error {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if len(c.Name) > 9 || strings.ContainsAny(c.Name, "/ \t") {
		return fmt.Errorf("lab name %q: want at most 9 characters (link names are limited to 15)", c.Name)
	}
	if c.Subnet == "" {
		c.Subnet = DefaultSubnet
	}
	if ip := net.ParseIP(c.Subnet + ".1"); ip == nil || ip.To4() == nil {
		return fmt.Errorf("lab subnet %q: want three octets such as 10.232.80", c.Subnet)
	}
	if c.Dir == "" {
		return errors.New("lab: Dir is required")
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return err
	}
	c.Dir = dir
	if c.Machines == 0 {
		c.Machines = DefaultMachines
	}
	if c.Machines < 1 || c.Machines > 90 {
		return fmt.Errorf("--machines %d: want 1 to 90", c.Machines)
	}
	switch c.Firmware {
	case "":
		c.Firmware = power.FirmwareBIOS
	case power.FirmwareBIOS, power.FirmwareUEFI, "mixed":
	default:
		return fmt.Errorf("--firmware %q: want bios, uefi or mixed", c.Firmware)
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 1536
	}
	if c.DiskGiB == 0 {
		c.DiskGiB = 8
	}
	if c.DiskGiB < 4 {
		return fmt.Errorf("disk size %d GiB: the lab image needs at least 4", c.DiskGiB)
	}
	if c.KernelCache == "" {
		c.KernelCache = filepath.Join("build", "kernel")
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Names of what the lab creates.
func (c *Config) netns() string    { return c.Name }
func (c *Config) bridge() string   { return c.Name + "br0" }
func (c *Config) hostLink() string { return c.Name + "host" } // the host's end of the veth
func (c *Config) lanLink() string  { return c.Name + "up" }   // its peer, a bridge port
func (c *Config) tap(i int) string { return fmt.Sprintf("%stap%d", c.Name, i) }
func (c *Config) vmName(i int) string {
	return fmt.Sprintf("%s-vm%d", c.Name, i)
}

// Addresses on the lab's /24.
func (c *Config) bridgeIP() string  { return c.Subnet + ".1" }   // the coordinator
func (c *Config) hostIP() string    { return c.Subnet + ".254" } // the operator's host
func (c *Config) poolStart() string { return c.Subnet + ".100" }
func (c *Config) poolEnd() string   { return c.Subnet + ".199" }

// APIURL is the coordinator's API as the host reaches it.
func (c *Config) APIURL() string { return fmt.Sprintf("https://%s:%d", c.bridgeIP(), apiPort) }

// Paths in Dir.
func (c *Config) coordinatorDir() string { return filepath.Join(c.Dir, "coordinator") }
func (c *Config) bootDir() string        { return filepath.Join(c.Dir, "boot") }
func (c *Config) vmDir(i int) string     { return filepath.Join(c.Dir, "vms", fmt.Sprintf("vm%d", i)) }
func (c *Config) stateFile() string      { return filepath.Join(c.Dir, "lab.json") }

// OperatorEnv is the coordinator's credentials file, for `rivet ... --env-file`.
func (c *Config) OperatorEnv() string { return filepath.Join(c.coordinatorDir(), "operator.env") }

// firmwareOf returns VM i's firmware (1-based); mixed alternates, BIOS first.
func (c *Config) firmwareOf(i int) string {
	if c.Firmware == "mixed" {
		if i%2 == 0 {
			return power.FirmwareUEFI
		}
		return power.FirmwareBIOS
	}
	return c.Firmware
}

// machine returns VM i's fixed hardware (1-based) with the given firmware. MAC and UUID
// carry the subnet's third octet, so labs on different subnets never share them.
func (c *Config) machine(i int, firmware string) power.QEMUConfig {
	third := c.Subnet[strings.LastIndexByte(c.Subnet, '.')+1:]
	var oct int
	fmt.Sscanf(third, "%d", &oct)
	return power.QEMUConfig{
		Name: c.vmName(i), Dir: c.vmDir(i), Netns: c.netns(), Tap: c.tap(i),
		MAC:  fmt.Sprintf("52:54:00:e8:%02x:%02x", oct, i),
		UUID: fmt.Sprintf("5256524c-4142-4000-8000-%06x%06x", oct, i),
		Disk: filepath.Join(c.vmDir(i), "disk.raw"), DiskSerial: diskSerial,
		MemoryMiB: c.MemoryMiB, Firmware: firmware, Logger: c.Logger,
	}
}

// state is what Up records in Dir for Down and for the next Up. A VM keeps the firmware
// it was first created with, whatever a later --firmware says.
type state struct {
	Name      string         `json:"name"`
	Subnet    string         `json:"subnet"`
	Firmwares map[int]string `json:"firmwares"` // VM number → bios or uefi
}

func readState(path string) (*state, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &st, nil
}

func (st *state) write(path string) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
