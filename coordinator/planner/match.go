package planner

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

// Units. Disks are sold in decimal gigabytes, memory in binary ones.
const (
	diskGB = 1_000_000_000
	memGB  = 1 << 30
	// memSlack is how much less than installed memory the kernel may report: firmware and
	// the kernel keep a few percent, so a "64 GB" server shows about 62.7 GiB in MemTotal.
	// It applies only when the inventory has no DIMM list to add up.
	memSlack = 0.05
)

// Match finds the one role whose selector matches m. With no match, problem says so and
// names the closest role and the selector fields it failed on; with several, problem names
// them all. A machine is never given a guessed role: the problem is shown to the operator.
func Match(roles []shared.Role, m *shared.Machine) (role *shared.Role, problem string) {
	if m.Inventory == nil {
		return nil, "no role matches: the machine has sent no inventory yet"
	}
	if len(roles) == 0 {
		return nil, "no role matches: no roles are defined (rivet roles apply)"
	}
	var matched []int
	closest, closestFails := -1, []string(nil)
	for _, i := range byName(roles) {
		fails := mismatches(&roles[i].Selector, m)
		if len(fails) == 0 {
			matched = append(matched, i)
			continue
		}
		if closest < 0 || len(fails) < len(closestFails) {
			closest, closestFails = i, fails
		}
	}
	switch len(matched) {
	case 1:
		return &roles[matched[0]], ""
	case 0:
		return nil, fmt.Sprintf("no role matches: closest is role %s, which wants %s",
			roles[closest].Name, strings.Join(closestFails, "; "))
	}
	names := make([]string, len(matched))
	for j, i := range matched {
		names[j] = roles[i].Name
	}
	verb := "both match"
	if len(names) > 2 {
		verb = "all match"
	}
	return nil, fmt.Sprintf("ambiguous: roles %s %s; make their selectors exclusive (labels help)",
		strings.Join(names, ", "), verb)
}

// byName returns the indexes of roles ordered by name, so that messages and the choice of
// the closest role do not depend on the order roles were stored in.
func byName(roles []shared.Role) []int {
	idx := make([]int, len(roles))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return roles[idx[a]].Name < roles[idx[b]].Name })
	return idx
}

// mismatches lists, for each selector field m fails, what the field wants and what m has.
// An empty list means the selector matches.
func mismatches(sel *shared.Selector, m *shared.Machine) []string {
	inv := m.Inventory
	var fails []string
	failf := func(format string, args ...any) { fails = append(fails, fmt.Sprintf(format, args...)) }

	fails = append(fails, labelMismatches("label", sel.Labels, m.Labels)...)
	fails = append(fails, labelMismatches("fact", sel.Facts, m.Facts)...)
	if sel.MinCores > 0 && inv.Cores() < sel.MinCores {
		failf("min_cores %d (machine has %d%s)", sel.MinCores, inv.Cores(), sectionErr(inv, shared.SectionCPU))
	}
	if sel.MinMemoryGB > 0 && !enoughMemory(inv, sel.MinMemoryGB) {
		failf("min_memory_gb %d (machine has %.1f GiB%s)", sel.MinMemoryGB,
			float64(inv.Memory.TotalBytes)/memGB, sectionErr(inv, shared.SectionMemory))
	}
	if (sel.MinDiskGB > 0 || sel.DiskType != "") && !hasDisk(inv, sel.MinDiskGB, sel.DiskType) {
		failf("a non-removable %s disk of at least %d GB (machine has %s%s)", orAny(sel.DiskType),
			sel.MinDiskGB, describeDisks(inv), sectionErr(inv, shared.SectionDisks))
	}
	if sel.MinNICs > 0 || sel.MinNICSpeedMbps > 0 {
		if want, got := max(sel.MinNICs, 1), fastNICs(inv, sel.MinNICSpeedMbps); got < want {
			speed := ""
			if sel.MinNICSpeedMbps > 0 {
				speed = fmt.Sprintf(" of at least %d Mb/s", sel.MinNICSpeedMbps)
			}
			failf("%d physical NIC(s)%s (machine has %d%s)", want, speed, got,
				sectionErr(inv, shared.SectionNICs))
		}
	}
	if sel.PCIVendor != "" && !hasPCIVendor(inv, sel.PCIVendor) {
		failf("pci_vendor %q (no such device among %d%s)", sel.PCIVendor, len(inv.PCI),
			sectionErr(inv, shared.SectionPCI))
	}
	if sel.Firmware != "" && inv.System.Firmware != sel.Firmware {
		failf("firmware %s (machine has %s)", sel.Firmware, orUnknown(inv.System.Firmware))
	}
	return fails
}

// labelMismatches compares wanted labels with a machine's: its operator labels, or the
// facts its agent reported (kind names which, so a reason never mistakes one for the other).
func labelMismatches(kind string, want, have map[string]string) []string {
	var fails []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got, ok := have[k]; !ok {
			fails = append(fails, fmt.Sprintf("%s %s=%s (machine has no %s %s)", kind, k, want[k], k, kind))
		} else if got != want[k] {
			fails = append(fails, fmt.Sprintf("%s %s=%s (machine has %s=%s)", kind, k, want[k], k, got))
		}
	}
	return fails
}

// enoughMemory compares installed memory with wantGB binary gigabytes. The DIMM list is the
// installed amount; without it the kernel's total is used, with memSlack allowed for.
func enoughMemory(inv *shared.Inventory, wantGB int) bool {
	var dimms uint64
	for _, d := range inv.Memory.DIMMs {
		dimms += d.SizeBytes
	}
	want := float64(wantGB) * memGB
	if dimms > 0 {
		return float64(dimms) >= want
	}
	return float64(inv.Memory.TotalBytes) >= want*(1-memSlack)
}

// hasDisk reports whether some non-removable disk of the type (any when empty) holds at
// least minGB decimal gigabytes.
func hasDisk(inv *shared.Inventory, minGB int, typ string) bool {
	for _, d := range inv.Disks {
		if !d.Removable && (typ == "" || d.Type == typ) && d.SizeBytes >= uint64(minGB)*diskGB {
			return true
		}
	}
	return false
}

// fastNICs counts physical NICs at least minMbps fast (every physical NIC when minMbps is 0).
func fastNICs(inv *shared.Inventory, minMbps int) int {
	n := 0
	for _, nic := range inv.PhysicalNICs() {
		if nic.SpeedMbps >= minMbps {
			n++
		}
	}
	return n
}

// hasPCIVendor matches a vendor by hex id ("8086", "0x8086") or by a case-insensitive
// substring of its pci.ids name ("intel", "Mellanox").
func hasPCIVendor(inv *shared.Inventory, want string) bool {
	id := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(want)), "0x")
	name := strings.ToLower(strings.TrimSpace(want))
	for _, p := range inv.PCI {
		if strings.TrimPrefix(strings.ToLower(p.VendorID), "0x") == id {
			return true
		}
		if name != "" && strings.Contains(strings.ToLower(p.Vendor), name) {
			return true
		}
	}
	return false
}

func describeDisks(inv *shared.Inventory) string {
	if len(inv.Disks) == 0 {
		return "no disks"
	}
	parts := make([]string, 0, len(inv.Disks))
	for _, d := range inv.Disks {
		s := fmt.Sprintf("%s %s %d GB", d.Name, orUnknown(d.Type), d.SizeBytes/diskGB)
		if d.Removable {
			s += " removable"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// sectionErr says why a fact may be missing: the agent could not read that section.
func sectionErr(inv *shared.Inventory, section string) string {
	if e := inv.Errors[section]; e != "" {
		return "; inventory of " + section + " failed: " + e
	}
	return ""
}

func orAny(s string) string {
	if s == "" {
		return "any-type"
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
