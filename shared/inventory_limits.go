package shared

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
)

// The caps on a decoded inventory. Every list and string an agent sends is bounded, and
// so is the whole inventory's encoded size: a coordinator keeps one inventory per machine
// on every member, so an agent (or anyone holding a machine token) must not be able to
// make that record grow without bound. The caps are generous for real machines: the agent
// trims what is over them with Fit (and says so in the inventory) rather than failing to
// register, so the coordinator never refuses a real machine's inventory.
const (
	MaxInventoryBytes    = 256 << 10 // the inventory's JSON encoding
	MaxDisks             = 256
	MaxPartitionsPerDisk = 128 // GPT's default partition table size
	MaxPartitions        = 1024
	MaxNICs              = 256
	MaxNICAddrs          = 32
	MaxPCIDevices        = 1024
	MaxCPUFlags          = 256
	MaxDIMMs             = 256
	MaxInventoryErrors   = 16
	MaxInventoryString   = 256  // identity strings: vendor, model, serial, ...
	MaxInventoryNote     = 1024 // an inventory error's text
	MaxDeviceName        = 64   // kernel names: vda, nvme0n1p1, eth0, 0000:00:03.0
	maxFieldLen          = 1024 // free text elsewhere (role descriptions, plan targets)
)

// Validate checks that the inventory is well formed and within every cap. The error
// names the cap that was exceeded.
func (inv *Inventory) Validate() error {
	if inv == nil {
		return fmt.Errorf("inventory is missing")
	}
	for _, c := range inv.counts() {
		if c.n > c.max {
			return fmt.Errorf("inventory has %d %s, over the limit of %d", c.n, c.what, c.max)
		}
	}
	if err := inv.validateFields(); err != nil {
		return err
	}
	// Encoded size last: the caps above bound it, and it needs the encoding.
	if n := inv.EncodedSize(); n > MaxInventoryBytes {
		return fmt.Errorf("inventory is %d bytes encoded, over the limit of %d bytes", n, MaxInventoryBytes)
	}
	return nil
}

// EncodedSize is the length of the inventory's JSON encoding, what a coordinator stores.
func (inv *Inventory) EncodedSize() int {
	b, err := json.Marshal(inv)
	if err != nil {
		return MaxInventoryBytes + 1 // cannot happen for these types; refuse rather than store
	}
	return len(b)
}

type count struct {
	what   string
	n, max int
}

func (inv *Inventory) counts() []count {
	parts := 0
	out := []count{
		{"disks", len(inv.Disks), MaxDisks},
		{"nics", len(inv.NICs), MaxNICs},
		{"pci devices", len(inv.PCI), MaxPCIDevices},
		{"cpu flags", len(inv.CPU.Flags), MaxCPUFlags},
		{"dimms", len(inv.Memory.DIMMs), MaxDIMMs},
		{"section errors", len(inv.Errors), MaxInventoryErrors},
	}
	for i, d := range inv.Disks {
		parts += len(d.Partitions)
		out = append(out, count{fmt.Sprintf("partitions on disks[%d]", i), len(d.Partitions), MaxPartitionsPerDisk})
	}
	for i, n := range inv.NICs {
		out = append(out, count{fmt.Sprintf("addresses on nics[%d]", i), len(n.Addrs), MaxNICAddrs})
	}
	return append(out, count{"partitions in all", parts, MaxPartitions})
}

func (inv *Inventory) validateFields() error {
	if f := inv.System.Firmware; f != "" && f != "bios" && f != "uefi" {
		return fmt.Errorf("system.firmware %q: want bios or uefi", f)
	}
	if inv.CPU.Cores < 0 || inv.CPU.Threads < 0 || inv.CPU.Sockets < 0 {
		return fmt.Errorf("cpu counts must not be negative")
	}
	for i, d := range inv.Disks {
		if d.Name == "" {
			return fmt.Errorf("disks[%d]: name is required", i)
		}
		for j, p := range d.Partitions {
			if p.Name == "" {
				return fmt.Errorf("disks[%d].partitions[%d]: name is required", i, j)
			}
		}
	}
	for i, n := range inv.NICs {
		if n.Name == "" {
			return fmt.Errorf("nics[%d]: name is required", i)
		}
		if n.MAC != "" {
			if _, err := net.ParseMAC(n.MAC); err != nil {
				return fmt.Errorf("nics[%d]: bad mac %q", i, n.MAC)
			}
		}
	}
	for _, f := range inv.stringFields() {
		if len(*f.p) > f.max {
			return fmt.Errorf("%s is %d bytes, over the limit of %d", f.where, len(*f.p), f.max)
		}
	}
	for k, v := range inv.Errors {
		if len(k) > MaxDeviceName || len(v) > MaxInventoryNote {
			return fmt.Errorf("errors[%.64q]: key or text over the limit of %d or %d bytes", k, MaxDeviceName, MaxInventoryNote)
		}
	}
	return nil
}

// stringField is one string of the inventory with its cap; the pointer lets Fit cut it.
type stringField struct {
	where string
	p     *string
	max   int
}

func (inv *Inventory) stringFields() []stringField {
	s, c := &inv.System, &inv.CPU
	out := []stringField{
		{"system.vendor", &s.Vendor, MaxInventoryString}, {"system.product", &s.Product, MaxInventoryString},
		{"system.serial", &s.Serial, MaxInventoryString}, {"system.uuid", &s.UUID, MaxInventoryString},
		{"system.firmware", &s.Firmware, MaxInventoryString}, {"system.bios_version", &s.BIOS, MaxInventoryString},
		{"system.hostname", &s.Hostname, MaxInventoryString}, {"cpu.model", &c.Model, MaxInventoryString},
	}
	for i := range c.Flags {
		out = append(out, stringField{fmt.Sprintf("cpu.flags[%d]", i), &c.Flags[i], MaxDeviceName})
	}
	for i := range inv.Memory.DIMMs {
		d := &inv.Memory.DIMMs[i]
		w := fmt.Sprintf("memory.dimms[%d]", i)
		out = append(out, stringField{w + ".locator", &d.Locator, MaxInventoryString},
			stringField{w + ".type", &d.Type, MaxInventoryString}, stringField{w + ".vendor", &d.Vendor, MaxInventoryString})
	}
	for i := range inv.Disks {
		out = append(out, inv.Disks[i].stringFields(fmt.Sprintf("disks[%d]", i))...)
	}
	for i := range inv.NICs {
		n := &inv.NICs[i]
		w := fmt.Sprintf("nics[%d]", i)
		out = append(out, stringField{w + ".name", &n.Name, MaxDeviceName}, stringField{w + ".mac", &n.MAC, MaxDeviceName},
			stringField{w + ".driver", &n.Driver, MaxDeviceName}, stringField{w + ".pci_address", &n.PCIAddress, MaxDeviceName},
			stringField{w + ".vendor", &n.Vendor, MaxInventoryString}, stringField{w + ".product", &n.Product, MaxInventoryString})
		for j := range n.Addrs {
			out = append(out, stringField{fmt.Sprintf("%s.addrs[%d]", w, j), &n.Addrs[j], MaxDeviceName})
		}
	}
	for i := range inv.PCI {
		p := &inv.PCI[i]
		w := fmt.Sprintf("pci[%d]", i)
		out = append(out, stringField{w + ".address", &p.Address, MaxDeviceName},
			stringField{w + ".vendor_id", &p.VendorID, MaxDeviceName}, stringField{w + ".product_id", &p.ProductID, MaxDeviceName},
			stringField{w + ".vendor", &p.Vendor, MaxInventoryString}, stringField{w + ".product", &p.Product, MaxInventoryString},
			stringField{w + ".class", &p.Class, MaxInventoryString}, stringField{w + ".driver", &p.Driver, MaxDeviceName})
	}
	return out
}

func (d *Disk) stringFields(w string) []stringField {
	out := []stringField{{w + ".name", &d.Name, MaxDeviceName}, {w + ".type", &d.Type, MaxDeviceName},
		{w + ".model", &d.Model, MaxInventoryString}, {w + ".serial", &d.Serial, MaxInventoryString},
		{w + ".wwn", &d.WWN, MaxInventoryString}}
	for j := range d.Partitions {
		p := &d.Partitions[j]
		pw := fmt.Sprintf("%s.partitions[%d]", w, j)
		out = append(out, stringField{pw + ".name", &p.Name, MaxDeviceName},
			stringField{pw + ".fs_type", &p.FSType, MaxDeviceName}, stringField{pw + ".label", &p.Label, MaxInventoryString})
	}
	return out
}

// Fit makes an inventory that a real machine produced fit the caps, so that a machine
// with, say, 300 partitions still registers: lists over a cap keep their first entries
// (disks and NICs in the order the agent found them), strings are cut, and each trim is
// noted under Errors, in the section it concerns, so an operator sees that the
// inventory is incomplete. It returns the notes. Section errors over their cap are kept
// by name order; error texts are cut to MaxInventoryNote.
func (inv *Inventory) Fit() []string {
	var notes []string
	note := func(section, format string, args ...any) {
		notes = append(notes, section+": "+fmt.Sprintf(format, args...))
	}
	if len(inv.Disks) > MaxDisks {
		note(SectionDisks, "%d disks, kept the first %d", len(inv.Disks), MaxDisks)
		inv.Disks = inv.Disks[:MaxDisks]
	}
	parts := 0
	for i := range inv.Disks {
		d := &inv.Disks[i]
		keep := min(len(d.Partitions), MaxPartitionsPerDisk, max(MaxPartitions-parts, 0))
		if keep < len(d.Partitions) {
			note(SectionDisks, "%d partitions on %s, kept %d", len(d.Partitions), d.Name, keep)
			d.Partitions = d.Partitions[:keep]
		}
		parts += keep
	}
	if len(inv.NICs) > MaxNICs {
		note(SectionNICs, "%d interfaces, kept the first %d", len(inv.NICs), MaxNICs)
		inv.NICs = inv.NICs[:MaxNICs]
	}
	for i := range inv.NICs {
		if n := &inv.NICs[i]; len(n.Addrs) > MaxNICAddrs {
			note(SectionNICs, "%d addresses on %s, kept %d", len(n.Addrs), n.Name, MaxNICAddrs)
			n.Addrs = n.Addrs[:MaxNICAddrs]
		}
	}
	if len(inv.PCI) > MaxPCIDevices {
		note(SectionPCI, "%d devices, kept the first %d", len(inv.PCI), MaxPCIDevices)
		inv.PCI = inv.PCI[:MaxPCIDevices]
	}
	if len(inv.CPU.Flags) > MaxCPUFlags {
		note(SectionCPU, "%d flags, kept %d", len(inv.CPU.Flags), MaxCPUFlags)
		inv.CPU.Flags = inv.CPU.Flags[:MaxCPUFlags]
	}
	if len(inv.Memory.DIMMs) > MaxDIMMs {
		note(SectionMemory, "%d dimms, kept %d", len(inv.Memory.DIMMs), MaxDIMMs)
		inv.Memory.DIMMs = inv.Memory.DIMMs[:MaxDIMMs]
	}
	cut := 0
	for _, f := range inv.stringFields() {
		if len(*f.p) > f.max {
			*f.p = truncateUTF8(*f.p, f.max)
			cut++
		}
	}
	if cut > 0 {
		notes = append(notes, fmt.Sprintf("inventory: cut %d strings to their limit", cut))
	}
	notes = append(notes, inv.fitSize()...)
	inv.fitErrors(notes)
	return notes
}

// fitSize drops whole lists, least useful for placement first, until the encoding fits.
// Real machines never get here: it takes the caps above filled with maximal strings.
func (inv *Inventory) fitSize() []string {
	drops := []struct {
		note string
		drop func()
	}{
		{SectionPCI + ": inventory too large, dropped the pci devices", func() { inv.PCI = nil }},
		{SectionMemory + ": inventory too large, dropped the dimms", func() { inv.Memory.DIMMs = nil }},
		{SectionDisks + ": inventory too large, dropped the partitions", func() {
			for i := range inv.Disks {
				inv.Disks[i].Partitions = nil
			}
		}},
		{SectionNICs + ": inventory too large, dropped the interface addresses", func() {
			for i := range inv.NICs {
				inv.NICs[i].Addrs = nil
			}
		}},
	}
	var notes []string
	for _, d := range drops {
		// The notes themselves take room: leave some for them.
		if inv.EncodedSize() <= MaxInventoryBytes-MaxInventoryErrors*MaxInventoryNote {
			break
		}
		d.drop()
		notes = append(notes, d.note)
	}
	return notes
}

// fitErrors records the notes and bounds the section errors.
func (inv *Inventory) fitErrors(notes []string) {
	bySection := map[string][]string{}
	for _, n := range notes {
		section, text, _ := strings.Cut(n, ": ")
		bySection[section] = append(bySection[section], "trimmed: "+text)
	}
	for section, texts := range bySection {
		if inv.Errors == nil {
			inv.Errors = map[string]string{}
		}
		msg := strings.Join(texts, "; ")
		if prev := inv.Errors[section]; prev != "" {
			msg = prev + "; " + msg
		}
		inv.Errors[section] = msg
	}
	keys := slices.Sorted(maps.Keys(inv.Errors))
	for i, k := range keys {
		switch {
		case i >= MaxInventoryErrors || len(k) > MaxDeviceName:
			delete(inv.Errors, k)
		case len(inv.Errors[k]) > MaxInventoryNote:
			inv.Errors[k] = truncateUTF8(inv.Errors[k], MaxInventoryNote)
		}
	}
}

// truncateUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
