package inventory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

// pciIDsPaths are where distributions (and Rivet's initramfs) keep pci.ids: Debian's
// pciutils and hwdata, and the hwdata location of other distributions.
var pciIDsPaths = []string{
	"/usr/share/misc/pci.ids",
	"/usr/share/hwdata/pci.ids",
	"/usr/share/pci.ids",
}

// pci lists the devices on the PCI bus from sysfs and names them from pci.ids. It does
// not use ghw here: ghw loads the whole database into maps (most of the collection's
// time) and drops every device when one has an odd modalias; a single pass over pci.ids
// that keeps only the names of present devices is several times cheaper.
//
// Without pci.ids the devices are still listed, by id, and the section records why the
// names are missing.
func (c *collector) pci(ctx context.Context) (func(*shared.Inventory), error) {
	entries, err := os.ReadDir(c.sys.path("bus", "pci", "devices"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // no PCI bus (some arm boards): nothing to list
		}
		return nil, fmt.Errorf("listing PCI devices: %w", err)
	}
	var devs []shared.PCIDevice
	for _, e := range entries {
		addr := e.Name()
		if !pciAddressPattern.MatchString(addr) {
			continue
		}
		devs = append(devs, shared.PCIDevice{
			Address:   addr,
			VendorID:  pciID(c.sys.read("bus", "pci", "devices", addr, "vendor")),
			ProductID: pciID(c.sys.read("bus", "pci", "devices", addr, "device")),
			Class:     strings.TrimPrefix(c.sys.read("bus", "pci", "devices", addr, "class"), "0x"),
			Driver:    c.sys.link("bus", "pci", "devices", addr, "driver"),
		})
	}
	slices.SortFunc(devs, func(a, b shared.PCIDevice) int { return strings.Compare(a.Address, b.Address) })
	fill := func(inv *shared.Inventory) { inv.PCI = devs }
	if len(devs) == 0 {
		return fill, nil
	}
	path, data, err := c.readPCIIDs()
	if err != nil {
		return fill, err
	}
	names := scanPCIIDs(data, devs)
	for i := range devs {
		d := &devs[i]
		d.Vendor = names.vendors[d.VendorID]
		d.Product = names.products[d.VendorID+d.ProductID]
		d.Class = names.className(d.Class)
	}
	c.log.Debug("named PCI devices", "pci_ids", path, "devices", len(devs))
	return fill, nil
}

// pciID turns sysfs's "0x8086" into pci.ids's "8086".
func pciID(s string) string {
	return strings.ToLower(strings.TrimPrefix(s, "0x"))
}

func (c *collector) readPCIIDs() (string, []byte, error) {
	if c.opts.PCIIDsPath != "" {
		data, err := os.ReadFile(c.opts.PCIIDsPath)
		if err != nil {
			return "", nil, fmt.Errorf("PCI devices are listed by id only: reading pci.ids: %w "+
				"(check --pci-ids)", err)
		}
		return c.opts.PCIIDsPath, data, nil
	}
	for _, p := range pciIDsPaths {
		if data, err := os.ReadFile(p); err == nil {
			return p, data, nil
		}
	}
	return "", nil, fmt.Errorf("PCI devices are listed by id only: no pci.ids in %s "+
		"(install Debian's hwdata or pciutils, or pass --pci-ids)", strings.Join(pciIDsPaths, ", "))
}

// pciNames holds the names scanPCIIDs kept: vendors by "vvvv", products by "vvvvdddd",
// classes by "cc" and subclasses by "ccss".
type pciNames struct {
	vendors, products, classes map[string]string
}

// className names a class code "ccssii" by its subclass ("Ethernet controller"),
// else its class ("Network controller"), else leaves the code.
func (n pciNames) className(code string) string {
	if len(code) < 4 {
		return code
	}
	if name := n.classes[code[:4]]; name != "" {
		return name
	}
	if name := n.classes[code[:2]]; name != "" {
		return name
	}
	return code
}

// scanPCIIDs reads pci.ids once and keeps the names of the given devices only. The file
// lists vendors at column 0 ("8086  Intel Corporation"), their devices after one tab,
// subsystems after two, and at the end classes ("C 02  Network controller") with their
// subclasses after one tab.
func scanPCIIDs(data []byte, devs []shared.PCIDevice) pciNames {
	names := pciNames{vendors: map[string]string{}, products: map[string]string{}, classes: map[string]string{}}
	wantVendor, wantProduct, wantClass := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, d := range devs {
		wantVendor[d.VendorID] = true
		wantProduct[d.VendorID+d.ProductID] = true
		if len(d.Class) >= 4 {
			wantClass[d.Class[:2]], wantClass[d.Class[:4]] = true, true
		}
	}
	vendor, class := "", "" // the vendor or class the following indented lines belong to
	inClasses := false
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) < 7 || line[0] == '#' || (line[0] == '\t' && line[1] == '\t') {
			continue // short, comment, subsystem or programming interface
		}
		switch {
		case line[0] == 'C' && line[1] == ' ':
			inClasses, vendor = true, ""
			class = string(line[2:4])
			if wantClass[class] {
				names.classes[class] = pciName(line[4:])
			}
		case line[0] == '\t' && inClasses:
			if key := class + string(line[1:3]); wantClass[key] {
				names.classes[key] = pciName(line[3:])
			}
		case line[0] == '\t':
			if vendor != "" && wantProduct[vendor+string(line[1:5])] {
				names.products[vendor+string(line[1:5])] = pciName(line[5:])
			}
		case !inClasses:
			vendor = ""
			if id := string(line[:4]); wantVendor[id] {
				vendor = id
				names.vendors[id] = pciName(line[4:])
			}
		}
	}
	return names
}

func pciName(b []byte) string {
	return truncate(strings.TrimSpace(string(b)), 1024)
}
