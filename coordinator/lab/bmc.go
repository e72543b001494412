package lab

import (
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/internal/atomicfile"
	"github.com/rivetmetal/rivet/internal/ipmisim/simconf"
	"github.com/rivetmetal/rivet/shared"
)

// Every lab VM has a BMC, as a server in a rack has: OpenIPMI's ipmi_sim whose chassis
// program is `rivet lab bmc-chassis` (it drives the VM's qemu over QMP), or, for
// redfishVM, Rivet's own Redfish service (internal/redfishbmc) over the same qemu driver.
// The BMCs listen on the bridge address, in the lab's namespace: the coordinator reaches
// them as it reaches BMCs on metal, and the operator's host can run ipmitool against
// them. The lab's import file names them with a password file, never the password.

const (
	bmcUser   = "admin"
	redfishVM = 2 // the VM behind the Redfish BMC; the others are behind ipmi_sim
)

// BMC is how the lab reaches one VM's BMC.
type BMC struct {
	VM       int
	Driver   shared.BMCDriver
	Address  string // IPMI host:port, or the Redfish service's https:// URL
	User     string
	Password string // from the lab's password file (0600)
	// TLSSHA256 pins the Redfish BMC's self-signed certificate.
	TLSSHA256 string
}

func (c *Config) bmcDir(i int) string         { return filepath.Join(c.Dir, "bmc", fmt.Sprintf("vm%d", i)) }
func (c *Config) bmcPasswordFile() string     { return filepath.Join(c.Dir, "bmc", "password") }
func (c *Config) redfishPinFile(i int) string { return filepath.Join(c.bmcDir(i), "tls.sha256") }
func (c *Config) ImportFile() string          { return filepath.Join(c.Dir, "machines.csv") }
func (c *Config) ipmiPort(i int) int          { return 6230 + i }
func (c *Config) redfishAddr(i int) string    { return fmt.Sprintf("%s:%d", c.bridgeIP(), 8440+i) }
func (c *Config) bmcChildName(i int) string   { return fmt.Sprintf("bmc-vm%d", i) }
func (c *Config) bmcDriverOf(i int) shared.BMCDriver {
	if i == redfishVM {
		return shared.BMCRedfish
	}
	return shared.BMCIPMI
}

// BMCPassword returns the lab's BMC password, making it on the first call: one password
// for the lab's BMCs, in a 0600 file the import file refers to.
func (c *Config) BMCPassword() (string, error) {
	if data, err := os.ReadFile(c.bmcPasswordFile()); err == nil {
		return strings.TrimSpace(string(data)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 8) // 16 hex digits: IPMI 2.0 passwords are at most 20 bytes
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	pw := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(c.bmcPasswordFile()), 0o700); err != nil {
		return "", err
	}
	return pw, atomicfile.Write(c.bmcPasswordFile(), []byte(pw+"\n"), 0o600)
}

// bmcChild is VM i's BMC process: ipmi_sim with its configuration in bmcDir, or `rivet
// lab redfish-bmc`.
func (c *Config) bmcChild(i int, password string) (child, error) {
	name := c.bmcChildName(i)
	if c.bmcDriverOf(i) == shared.BMCRedfish {
		return child{name: name, args: []string{"lab", "redfish-bmc", "--dir", c.Dir, "--vm", strconv.Itoa(i),
			"--listen", c.redfishAddr(i)}}, nil
	}
	bin, err := exec.LookPath("ipmi_sim")
	if err != nil {
		return child{}, fmt.Errorf("the lab's IPMI BMCs: %w (install Debian's openipmi)", err)
	}
	// ipmi_sim reads the chassis program as one quoted string split at spaces.
	if strings.ContainsAny(c.Dir+c.BinDir, " \t\"") {
		return child{}, fmt.Errorf("the lab's IPMI BMCs: the lab directory %q and the binaries' %q must have no spaces or quotes (ipmi_sim's chassis program line): give another --dir", c.Dir, c.BinDir)
	}
	chassis := fmt.Sprintf("%s lab bmc-chassis --dir %s --vm %d", filepath.Join(c.BinDir, "rivet"), c.Dir, i)
	err = simconf.Write(c.bmcDir(i), simconf.Options{Addr: c.bridgeIP(), Port: c.ipmiPort(i),
		User: bmcUser, Password: password, Chassis: chassis})
	if err != nil {
		return child{}, err
	}
	argv := simconf.Command(c.bmcDir(i))
	return child{name: name, bin: bin, args: argv[1:]}, nil
}

// startBMCs starts every VM's BMC unless it runs, and returns how to reach each.
func (c *Config) startBMCs(ctx context.Context) ([]BMC, error) {
	password, err := c.BMCPassword()
	if err != nil {
		return nil, fmt.Errorf("the lab's BMC password: %w", err)
	}
	var bmcs []BMC
	for i := 1; i <= c.Machines; i++ {
		ch, err := c.bmcChild(i, password)
		if err != nil {
			return nil, err
		}
		pid, started, err := c.start(ch)
		if err != nil {
			return nil, err
		}
		b := BMC{VM: i, Driver: c.bmcDriverOf(i), User: bmcUser, Password: password,
			Address: fmt.Sprintf("%s:%d", c.bridgeIP(), c.ipmiPort(i))}
		if b.Driver == shared.BMCRedfish {
			b.Address = "https://" + c.redfishAddr(i)
			if b.TLSSHA256, err = c.waitRedfishPin(ctx, i, pid); err != nil {
				return nil, err
			}
		} else if err := c.waitIPMIPort(ctx, i, pid); err != nil {
			return nil, err
		}
		if started {
			fmt.Fprintf(c.Out, "%-15s started (%s %s, pid %d, log %s)\n", ch.name, b.Driver, b.Address, pid, c.logFile(ch.name))
		}
		bmcs = append(bmcs, b)
	}
	return bmcs, nil
}

// waitRedfishPin waits for the Redfish BMC of VM i to write its certificate's
// fingerprint (it makes a new self-signed certificate on every start, as it listens).
func (c *Config) waitRedfishPin(ctx context.Context, i, pid int) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if data, err := os.ReadFile(c.redfishPinFile(i)); err == nil && len(strings.TrimSpace(string(data))) == 64 {
			return strings.TrimSpace(string(data)), nil
		}
		if !c.ours(pid) {
			return "", fmt.Errorf("the Redfish BMC of vm%d exited; its log:\n%s", i, tail(c.logFile(c.bmcChildName(i)), 2000))
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the Redfish BMC of vm%d wrote no certificate fingerprint to %s in 30 s", i, c.redfishPinFile(i))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitIPMIPort waits until the ipmi_sim of VM i has bound its UDP port: a power command
// sent before then is refused (seen when the lab powers VMs on right after starting
// their BMCs). /proc/PID/net/udp lists the sockets of the process's network namespace.
func (c *Config) waitIPMIPort(ctx context.Context, i, pid int) error {
	want := fmt.Sprintf(":%04X ", c.ipmiPort(i))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", pid)); err == nil && strings.Contains(string(data), want) {
			return nil
		}
		if !c.ours(pid) {
			return fmt.Errorf("the IPMI BMC of vm%d exited; its log:\n%s", i, tail(c.logFile(c.bmcChildName(i)), 2000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the IPMI BMC of vm%d did not bind UDP port %d in 30 s; its log is %s", i, c.ipmiPort(i), c.logFile(c.bmcChildName(i)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writeImportFile writes the lab's import file: one row per VM, by MAC, with its host
// name, its rack and its BMC, the password by reference to the lab's password file.
// It is the file an operator writes for a rack, and `rivet machines import -f` takes it.
func (c *Config) writeImportFile(bmcs []BMC) error {
	var b strings.Builder
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"hostname", "mac", "label.rack", "bmc_driver", "bmc_address", "bmc_user", "bmc_password_file", "bmc_tls_sha256"})
	for _, bmc := range bmcs {
		i := bmc.VM
		_ = w.Write([]string{c.vmName(i), c.machine(i, "").MAC, c.rackOf(i), string(bmc.Driver), bmc.Address,
			bmc.User, c.bmcPasswordFile(), bmc.TLSSHA256})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	return atomicfile.Write(c.ImportFile(), []byte(b.String()), 0o644)
}

// rackOf is VM i's rack: the lab spreads its VMs over labRacks racks, round robin.
func (c *Config) rackOf(i int) string { return fmt.Sprintf("r%d", (i-1)%labRacks+1) }

// importMachines imports the lab's import file as the CLI does: parsed and checked
// whole, the password read from the file it names, nothing stored if a row is bad.
func (c *Config) importMachines(ctx context.Context, client *shared.Client, bmcs []BMC) error {
	if err := c.writeImportFile(bmcs); err != nil {
		return fmt.Errorf("writing the lab's import file: %w", err)
	}
	data, err := os.ReadFile(c.ImportFile())
	if err != nil {
		return err
	}
	f, err := shared.ParseImportFile(c.ImportFile(), data)
	if err != nil {
		return err
	}
	password, err := c.BMCPassword()
	if err != nil {
		return err
	}
	req, err := f.Check(func(b *shared.BMC) error {
		if b.PasswordFile != c.bmcPasswordFile() {
			return fmt.Errorf("password file %q: the lab's rows name %s", b.PasswordFile, c.bmcPasswordFile())
		}
		b.Password, b.PasswordFile = password, ""
		return nil
	})
	if err != nil {
		return fmt.Errorf("the lab's import file %s: %w", c.ImportFile(), err)
	}
	res, err := client.ImportExpected(ctx, req)
	if err != nil {
		return fmt.Errorf("importing the lab's VMs as expected machines: %w", err)
	}
	fmt.Fprintf(c.Out, "expected machines imported from %s: %s (racks r1-r%d; BMCs: ipmi_sim, vm%d Redfish)\n",
		c.ImportFile(), res.Message, min(labRacks, c.Machines), redfishVM)
	return nil
}
