package inventory

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

// nics lists network interfaces from /sys/class/net. It does not use ghw here: ghw
// drops MAC addresses that are not burnt in and finds no PCI address for virtio NICs,
// and the machine id of a VM without DMI hangs on exactly that address.
func (c *collector) nics(ctx context.Context) (func(*shared.Inventory), error) {
	entries, err := os.ReadDir(c.sys.path("class", "net"))
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	addrs, addrErr := ipv4Addrs()
	var out []shared.NIC
	for _, e := range entries {
		name := e.Name()
		if name == "bonding_masters" || len(name) > 64 {
			continue // a control file of the bonding driver, not an interface
		}
		if c.sys.read("class", "net", name, "type") == "772" { // ARPHRD_LOOPBACK
			continue // loopback is no network card
		}
		n := c.sys.nic(name)
		n.Addrs = addrs[name]
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b shared.NIC) int { return strings.Compare(a.Name, b.Name) })
	fill := func(inv *shared.Inventory) { inv.NICs = out }
	if addrErr != nil {
		return fill, fmt.Errorf("reading IPv4 addresses: %w", addrErr)
	}
	return fill, nil
}

// nic reads one interface. Virtual is true for everything the kernel keeps under
// /sys/devices/virtual (bridges, veths, bonds, VLANs, tun/tap, dummies).
func (s sysfs) nic(name string) shared.NIC {
	n := shared.NIC{Name: name}
	if real, err := filepath.EvalSymlinks(s.path("class", "net", name)); err == nil {
		n.Virtual = strings.Contains(real, "/devices/virtual/")
	}
	n.MAC = validMAC(s.read("class", "net", name, "address"))
	n.Driver = s.link("class", "net", name, "device", "driver")
	n.PCIAddress = s.pciAddressOf("class", "net", name, "device")
	// carrier cannot be read while the interface is down: that is "no link" too.
	n.Link = s.read("class", "net", name, "carrier") == "1"
	if speed, err := strconv.Atoi(s.read("class", "net", name, "speed")); err == nil && speed > 0 {
		n.SpeedMbps = speed
	}
	return n
}

// nameNICs gives each NIC the vendor and product names of its PCI device, which the
// PCI section read from pci.ids.
func nameNICs(inv *shared.Inventory) {
	byAddr := make(map[string]*shared.PCIDevice, len(inv.PCI))
	for i := range inv.PCI {
		byAddr[inv.PCI[i].Address] = &inv.PCI[i]
	}
	for i := range inv.NICs {
		n := &inv.NICs[i]
		if d := byAddr[n.PCIAddress]; n.PCIAddress != "" && d != nil {
			n.Vendor, n.Product = d.Vendor, d.Product
		}
	}
}

// validMAC returns mac in canonical form, or "" for the all-zero address of loopback
// and for link-layer addresses that are not MACs (tunnels have 4 or 16 bytes).
func validMAC(mac string) string {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return ""
	}
	for _, b := range hw {
		if b != 0 {
			return hw.String()
		}
	}
	return ""
}

// ipv4Addrs maps interface names to their IPv4 addresses in CIDR form.
func ipv4Addrs() (map[string][]string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, iface := range ifaces {
		addrs, err := iface.Addrs()
		if err != nil {
			return out, fmt.Errorf("%s: %w", iface.Name, err)
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && len(out[iface.Name]) < 64 {
				out[iface.Name] = append(out[iface.Name], ipn.String())
			}
		}
	}
	return out, nil
}
