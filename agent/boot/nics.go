package boot

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// nicDevice is one physical NIC: its name, hardware address and PCI address.
type nicDevice struct {
	Name string
	MAC  net.HardwareAddr
	PCI  string // "0000:00:03.0"; empty for a NIC that is not on PCI
}

func (n nicDevice) String() string {
	if n.PCI == "" {
		return fmt.Sprintf("%s (%s)", n.Name, n.MAC)
	}
	return fmt.Sprintf("%s (%s, PCI %s)", n.Name, n.MAC, n.PCI)
}

// bootIFKey is pxelinux's convention, which Rivet's iPXE script follows: BOOTIF=01-<mac>
// names the NIC the firmware booted from (01 is the ARP hardware type of Ethernet).
const bootIFKey = "BOOTIF"

// parseBootIF reads BOOTIF from a kernel command line. It returns nil when the key is
// absent, and an error when it is there but not "01-aa-bb-cc-dd-ee-ff" (any case). The
// last BOOTIF wins, as for any kernel parameter.
func parseBootIF(cmdline string) (net.HardwareAddr, error) {
	value, found := "", false
	for _, field := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(field, bootIFKey+"="); ok {
			value, found = v, true
		}
	}
	if !found {
		return nil, nil
	}
	hwType, mac, _ := strings.Cut(value, "-")
	if hwType != "01" {
		return nil, fmt.Errorf("%s=%s: want 01-aa-bb-cc-dd-ee-ff (01: Ethernet)", bootIFKey, value)
	}
	addr, err := net.ParseMAC(mac)
	if err != nil || len(addr) != 6 || strings.Contains(mac, ":") {
		return nil, fmt.Errorf("%s=%s: want 01-aa-bb-cc-dd-ee-ff", bootIFKey, value)
	}
	return addr, nil
}

// nicOrder is the order in which the agent tries NICs. With a BOOTIF address it is only
// the NIC(s) with that MAC: the firmware reached the coordinator through it, and another
// NIC's DHCP network (a storage or management LAN) may not lead there. Without one it is
// every NIC, lowest PCI address first (the order of the slots, which does not change
// between boots, unlike the kernel's names on some machines), NICs off PCI last by name.
func nicOrder(nics []nicDevice, bootIF net.HardwareAddr) []nicDevice {
	var out []nicDevice
	for _, n := range nics {
		if bootIF == nil || bytes.Equal(n.MAC, bootIF) {
			out = append(out, n)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (a.PCI == "") != (b.PCI == "") {
			return a.PCI != ""
		}
		if a.PCI != b.PCI {
			return a.PCI < b.PCI // fixed-width lower-case hex: text order is numeric order
		}
		return a.Name < b.Name
	})
	return out
}

// pciAddress matches a PCI function's sysfs name, domain:bus:device.function.
var pciAddress = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// pciOf returns the PCI address in a NIC's resolved sysfs device path: the last path
// element that is one (a virtio NIC's device is virtioN below its PCI function).
func pciOf(devicePath string) string {
	parts := strings.Split(devicePath, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if p := strings.ToLower(parts[i]); pciAddress.MatchString(p) {
			return p
		}
	}
	return ""
}

// physicalNICs lists interfaces backed by a device (a PCI or virtio NIC), skipping lo,
// bridges, tunnels and other virtual links.
func physicalNICs() []nicDevice {
	const root = "/sys/class/net"
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var out []nicDevice
	for _, e := range entries {
		dev, err := filepath.EvalSymlinks(filepath.Join(root, e.Name(), "device"))
		if err != nil {
			continue
		}
		mac, _ := net.ParseMAC(readTrim(filepath.Join(root, e.Name(), "address")))
		out = append(out, nicDevice{Name: e.Name(), MAC: mac, PCI: pciOf(dev)})
	}
	return out
}

func describeDevices(nics []nicDevice) string {
	if len(nics) == 0 {
		return "none"
	}
	parts := make([]string, len(nics))
	for i, n := range nics {
		parts[i] = n.String()
	}
	return strings.Join(parts, ", ")
}
