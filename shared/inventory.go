package shared

import (
	"net"
	"time"
)

// Inventory is what an agent found on its machine. A section that could not be read is
// left empty and its error is recorded in Errors under the section's name, so that one
// failing subsystem never loses the rest.
type Inventory struct {
	System      System            `json:"system"`
	CPU         CPU               `json:"cpu"`
	Memory      Memory            `json:"memory"`
	Disks       []Disk            `json:"disks"`
	NICs        []NIC             `json:"nics"`
	PCI         []PCIDevice       `json:"pci"`
	Load        Load              `json:"load"`
	Errors      map[string]string `json:"errors,omitempty"` // section name → error text
	CollectedAt time.Time         `json:"collected_at"`
	// Took is how long the collection ran, for the operator's curiosity and the bench.
	TookMillis int64 `json:"took_ms"`
}

// Inventory section names, the keys of Inventory.Errors.
const (
	SectionSystem = "system"
	SectionCPU    = "cpu"
	SectionMemory = "memory"
	SectionDisks  = "disks"
	SectionNICs   = "nics"
	SectionPCI    = "pci"
	SectionLoad   = "load"
)

// System is the DMI/SMBIOS identity of the machine and its firmware.
type System struct {
	Vendor   string `json:"vendor,omitempty"`
	Product  string `json:"product,omitempty"`
	Serial   string `json:"serial,omitempty"`
	UUID     string `json:"uuid,omitempty"`
	Firmware string `json:"firmware,omitempty"` // "bios" or "uefi"
	BIOS     string `json:"bios_version,omitempty"`
	Hostname string `json:"hostname,omitempty"`
}

// CPU summarises the processors.
type CPU struct {
	Model   string   `json:"model,omitempty"`
	Sockets int      `json:"sockets"`
	Cores   int      `json:"cores"`
	Threads int      `json:"threads"`
	Flags   []string `json:"flags,omitempty"` // only the flags that matter for placement
}

// Memory is the installed memory.
type Memory struct {
	TotalBytes uint64 `json:"total_bytes"`
	DIMMs      []DIMM `json:"dimms,omitempty"`
}

// DIMM is one memory module, where the firmware tells.
type DIMM struct {
	Locator   string `json:"locator,omitempty"`
	SizeBytes uint64 `json:"size_bytes"`
	Type      string `json:"type,omitempty"`
	Vendor    string `json:"vendor,omitempty"`
}

// Disk is a block device that could hold an OS.
type Disk struct {
	Name       string      `json:"name"` // kernel name, e.g. "vda", "nvme0n1"
	SizeBytes  uint64      `json:"size_bytes"`
	Rotational bool        `json:"rotational"`
	Removable  bool        `json:"removable"`
	Type       string      `json:"type,omitempty"` // "ssd", "hdd", "nvme", "virtio", "unknown"
	Model      string      `json:"model,omitempty"`
	Serial     string      `json:"serial,omitempty"`
	WWN        string      `json:"wwn,omitempty"`
	Partitions []Partition `json:"partitions,omitempty"`
}

// Partition is one partition of a Disk.
type Partition struct {
	Name      string `json:"name"`
	SizeBytes uint64 `json:"size_bytes"`
	FSType    string `json:"fs_type,omitempty"`
	Label     string `json:"label,omitempty"`
}

// NIC is a network interface.
type NIC struct {
	Name       string   `json:"name"`
	MAC        string   `json:"mac"`
	Driver     string   `json:"driver,omitempty"`
	PCIAddress string   `json:"pci_address,omitempty"`
	Vendor     string   `json:"vendor,omitempty"`  // from pci.ids, by the NIC's PCI device
	Product    string   `json:"product,omitempty"` // from pci.ids, e.g. "Ethernet Connection (2) I219-V"
	Link       bool     `json:"link"`
	SpeedMbps  int      `json:"speed_mbps,omitempty"`
	Virtual    bool     `json:"virtual,omitempty"` // bridges, veths, bonds: not hardware
	Addrs      []string `json:"addrs,omitempty"`
}

// PCIDevice is one device on the PCI bus, named from pci.ids.
type PCIDevice struct {
	Address   string `json:"address"`
	VendorID  string `json:"vendor_id"`
	ProductID string `json:"product_id"`
	Vendor    string `json:"vendor,omitempty"`
	Product   string `json:"product,omitempty"`
	Class     string `json:"class,omitempty"`
	Driver    string `json:"driver,omitempty"`
}

// Load is live load and uptime at collection time.
type Load struct {
	Load1         float64 `json:"load1"`
	Load5         float64 `json:"load5"`
	Load15        float64 `json:"load15"`
	UptimeSeconds uint64  `json:"uptime_s"`
}

// Cores returns the physical core count, falling back to threads when cores are unknown.
func (inv *Inventory) Cores() int {
	if inv.CPU.Cores > 0 {
		return inv.CPU.Cores
	}
	return inv.CPU.Threads
}

// PhysicalNICs returns the NICs that are hardware (not bridges, veths or loopback).
func (inv *Inventory) PhysicalNICs() []NIC {
	var out []NIC
	for _, n := range inv.NICs {
		if !n.Virtual && n.MAC != "" {
			out = append(out, n)
		}
	}
	return out
}

// HasMAC reports whether any NIC carries mac (case-insensitive).
func (inv *Inventory) HasMAC(mac string) bool {
	want, err := net.ParseMAC(mac)
	if err != nil {
		return false
	}
	for _, n := range inv.NICs {
		if got, err := net.ParseMAC(n.MAC); err == nil && got.String() == want.String() {
			return true
		}
	}
	return false
}
