package planner

import (
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

func TestInstallDisk(t *testing.T) {
	tests := []struct {
		name    string
		rule    shared.DiskRule
		edit    func(*shared.Inventory)
		want    shared.DiskTarget
		wantErr string
	}{
		{name: "by serial", rule: shared.DiskRule{Serial: "NV-BIG"},
			want: shared.DiskTarget{Serial: "NV-BIG", WWN: "eui.0025388b91c0aaaa", Name: "nvme0n1"}},
		{name: "by serial, removable allowed when named", rule: shared.DiskRule{Serial: "USB-STICK"},
			want: shared.DiskTarget{Serial: "USB-STICK", Name: "sdb"}},
		{name: "serial unknown", rule: shared.DiskRule{Serial: "NOPE"},
			wantErr: `no disk with serial "NOPE" (machine has nvme0n1 nvme 3840 GB`},
		{name: "serial twice", rule: shared.DiskRule{Serial: "NV-SMALL"},
			edit: func(inv *shared.Inventory) {
				inv.Disks = append(inv.Disks, shared.Disk{Name: "nvme2n1", Type: "nvme", SizeBytes: 1, Serial: "NV-SMALL"})
			},
			wantErr: `disks nvme1n1 and nvme2n1 both have serial "NV-SMALL"`},
		{name: "by wwn, other spelling", rule: shared.DiskRule{WWN: "naa.5000c500a1b2c3d4"},
			want: shared.DiskTarget{Serial: "SSD-BOOT", WWN: "0x5000C500A1B2C3D4", Name: "sda"}},
		{name: "by wwn, eui form", rule: shared.DiskRule{WWN: "0x0025388B91C0AAAA"},
			want: shared.DiskTarget{Serial: "NV-BIG", WWN: "eui.0025388b91c0aaaa", Name: "nvme0n1"}},
		{name: "wwn unknown", rule: shared.DiskRule{WWN: "0x1"}, wantErr: `no disk with wwn "1"`},
		{name: "smallest of any type", rule: shared.DiskRule{Smallest: &shared.SmallestDisk{MinSizeGB: 100}},
			want: shared.DiskTarget{Serial: "SSD-BOOT", WWN: "0x5000C500A1B2C3D4", Name: "sda"}},
		{name: "smallest ignores removable", rule: shared.DiskRule{Smallest: &shared.SmallestDisk{MinSizeGB: 0}},
			want: shared.DiskTarget{Serial: "SSD-BOOT", WWN: "0x5000C500A1B2C3D4", Name: "sda"}},
		{name: "smallest of type", rule: shared.DiskRule{Smallest: &shared.SmallestDisk{Type: "nvme", MinSizeGB: 500}},
			want: shared.DiskTarget{Serial: "NV-SMALL", Name: "nvme1n1"}},
		{name: "smallest big enough", rule: shared.DiskRule{Smallest: &shared.SmallestDisk{Type: "nvme", MinSizeGB: 1000}},
			want: shared.DiskTarget{Serial: "NV-BIG", WWN: "eui.0025388b91c0aaaa", Name: "nvme0n1"}},
		{name: "smallest equal sizes: by name", rule: shared.DiskRule{Smallest: &shared.SmallestDisk{Type: "hdd"}},
			edit: func(inv *shared.Inventory) {
				inv.Disks = append(inv.Disks,
					shared.Disk{Name: "sdd", Type: "hdd", SizeBytes: 4000 * diskGB, Serial: "HDD-D"},
					shared.Disk{Name: "sdc", Type: "hdd", SizeBytes: 4000 * diskGB, Serial: "HDD-C"})
			},
			want: shared.DiskTarget{Serial: "HDD-C", Name: "sdc"}},
		{name: "smallest none fits", rule: shared.DiskRule{Smallest: &shared.SmallestDisk{Type: "ssd", MinSizeGB: 500}},
			wantErr: "no non-removable ssd disk of at least 500 GB"},
		{name: "chosen disk without identity", rule: shared.DiskRule{Smallest: &shared.SmallestDisk{Type: "virtio"}},
			edit: func(inv *shared.Inventory) {
				inv.Disks = append(inv.Disks, shared.Disk{Name: "vda", Type: "virtio", SizeBytes: 20 * diskGB})
			},
			wantErr: "disk vda has neither serial nor WWN"},
		{name: "disk inventory failed is named", rule: shared.DiskRule{Smallest: &shared.SmallestDisk{}},
			edit: func(inv *shared.Inventory) {
				inv.Disks = nil
				inv.Errors = map[string]string{shared.SectionDisks: "sysfs unreadable"}
			},
			wantErr: "machine has no disks); inventory of disks failed: sysfs unreadable"},
		{name: "invalid rule", rule: shared.DiskRule{Serial: "A", WWN: "B"},
			wantErr: "set exactly one of serial, wwn or smallest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := server("m-1", nil).Inventory
			if tt.edit != nil {
				tt.edit(inv)
			}
			got, err := InstallDisk(tt.rule, inv)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("InstallDisk error = %v; want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("InstallDisk: %v", err)
			}
			if got != tt.want {
				t.Fatalf("InstallDisk = %+v; want %+v", got, tt.want)
			}
		})
	}
}
