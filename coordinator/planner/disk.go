package planner

import (
	"fmt"
	"sort"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

// InstallDisk chooses the disk a role installs to, following the role's rule: the disk
// with that serial, the disk with that WWN, or the smallest non-removable disk of a type
// that is big enough. The chosen disk must carry a serial or a WWN: the agent refuses to
// wipe a disk it cannot identify by hardware, and the plan must not ask it to.
func InstallDisk(rule shared.DiskRule, inv *shared.Inventory) (shared.DiskTarget, error) {
	if err := rule.Validate(); err != nil {
		return shared.DiskTarget{}, fmt.Errorf("install_disk: %w", err)
	}
	if inv == nil {
		return shared.DiskTarget{}, fmt.Errorf("install_disk: the machine has sent no inventory")
	}
	var (
		d   *shared.Disk
		err error
	)
	switch {
	case rule.Serial != "":
		d, err = diskBy(inv, "serial", rule.Serial, func(d *shared.Disk) string { return d.Serial })
	case rule.WWN != "":
		d, err = diskBy(inv, "wwn", normalWWN(rule.WWN), func(d *shared.Disk) string { return normalWWN(d.WWN) })
	default:
		d, err = smallestDisk(inv, rule.Smallest)
	}
	if err != nil {
		return shared.DiskTarget{}, err
	}
	if d.Serial == "" && d.WWN == "" {
		return shared.DiskTarget{}, fmt.Errorf("install_disk: disk %s has neither serial nor WWN, so the agent "+
			"could not check it is the right disk before wiping it; give the disk a serial "+
			"(qemu: -drive ...,serial=NAME) or pick another disk", d.Name)
	}
	return shared.DiskTarget{Serial: d.Serial, WWN: d.WWN, Name: d.Name}, nil
}

// diskBy finds the one disk whose key equals want. The operator named it, so a removable
// disk is allowed; two disks with the same key are refused rather than guessed between.
func diskBy(inv *shared.Inventory, field, want string, key func(*shared.Disk) string) (*shared.Disk, error) {
	var found []*shared.Disk
	for i := range inv.Disks {
		if k := key(&inv.Disks[i]); k != "" && k == want {
			found = append(found, &inv.Disks[i])
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("install_disk: no disk with %s %q (machine has %s)%s",
			field, want, describeDisks(inv), sectionErr(inv, shared.SectionDisks))
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("install_disk: disks %s and %s both have %s %q; choose the disk another way",
		found[0].Name, found[1].Name, field, want)
}

// smallestDisk picks the smallest non-removable disk of the type that is big enough. The
// smallest, because the big disks in a server are usually the data disks.
func smallestDisk(inv *shared.Inventory, rule *shared.SmallestDisk) (*shared.Disk, error) {
	var fit []*shared.Disk
	for i := range inv.Disks {
		d := &inv.Disks[i]
		if !d.Removable && (rule.Type == "" || d.Type == rule.Type) && d.SizeBytes >= uint64(rule.MinSizeGB)*diskGB {
			fit = append(fit, d)
		}
	}
	if len(fit) == 0 {
		return nil, fmt.Errorf("install_disk: no non-removable %s disk of at least %d GB (machine has %s)%s",
			orAny(rule.Type), rule.MinSizeGB, describeDisks(inv), sectionErr(inv, shared.SectionDisks))
	}
	sort.Slice(fit, func(a, b int) bool {
		if fit[a].SizeBytes != fit[b].SizeBytes {
			return fit[a].SizeBytes < fit[b].SizeBytes
		}
		return fit[a].Name < fit[b].Name
	})
	return fit[0], nil
}

// normalWWN lets "0x5000C500A1B2C3D4", "naa.5000c500a1b2c3d4" and "5000c500a1b2c3d4" name
// the same disk: udev, sysfs and vendor tools print WWNs in these forms.
func normalWWN(w string) string {
	w = strings.ToLower(strings.TrimSpace(w))
	for _, p := range []string{"0x", "naa.", "eui.", "t10."} {
		w = strings.TrimPrefix(w, p)
	}
	return w
}
