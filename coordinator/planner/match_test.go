package planner

import (
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

const gib = 1 << 30

// server is a machine with two NVMe disks, one small SATA SSD, a removable USB stick, two
// 25G Mellanox NICs plus a bridge, 32 cores, 128 GiB in four DIMMs and UEFI firmware.
func server(id string, labels map[string]string) *shared.Machine {
	return &shared.Machine{
		ID: shared.MachineID(id), State: shared.StateDiscovered, Labels: labels,
		Admission: &shared.Admission{How: shared.AdmitApproved},
		Inventory: &shared.Inventory{
			System: shared.System{Firmware: "uefi"},
			CPU:    shared.CPU{Cores: 32, Threads: 64},
			Memory: shared.Memory{TotalBytes: 125 * gib, DIMMs: []shared.DIMM{
				{SizeBytes: 32 * gib}, {SizeBytes: 32 * gib}, {SizeBytes: 32 * gib}, {SizeBytes: 32 * gib}}},
			Disks: []shared.Disk{
				{Name: "nvme0n1", Type: "nvme", SizeBytes: 3840 * diskGB, Serial: "NV-BIG", WWN: "eui.0025388b91c0aaaa"},
				{Name: "nvme1n1", Type: "nvme", SizeBytes: 960 * diskGB, Serial: "NV-SMALL"},
				{Name: "sda", Type: "ssd", SizeBytes: 240 * diskGB, Serial: "SSD-BOOT", WWN: "0x5000C500A1B2C3D4"},
				{Name: "sdb", Type: "ssd", SizeBytes: 32 * diskGB, Serial: "USB-STICK", Removable: true},
			},
			NICs: []shared.NIC{
				{Name: "eno1", MAC: "52:54:00:00:00:01", SpeedMbps: 25000, Link: true},
				{Name: "eno2", MAC: "52:54:00:00:00:02", SpeedMbps: 25000, Link: true},
				{Name: "eno3", MAC: "52:54:00:00:00:03", SpeedMbps: 1000, Link: true},
				{Name: "br0", MAC: "52:54:00:00:00:09", SpeedMbps: 100000, Virtual: true},
			},
			PCI: []shared.PCIDevice{
				{Address: "0000:3b:00.0", VendorID: "15b3", Vendor: "Mellanox Technologies", Product: "MT27800"},
				{Address: "0000:00:1f.0", VendorID: "8086", Vendor: "Intel Corporation"},
			},
		},
	}
}

func role(name string, sel shared.Selector) shared.Role {
	return shared.Role{
		Name: name, Selector: sel,
		InstallDisk: shared.DiskRule{Smallest: &shared.SmallestDisk{MinSizeGB: 100}},
		Image:       shared.ImageSpec{URL: "/v1/images/debian-12.raw.zst", SHA256: strings.Repeat("a", 64)},
		Swarm:       shared.SwarmSpec{Role: shared.SwarmAuto},
	}
}

func TestSelectorFields(t *testing.T) {
	tests := []struct {
		name     string
		sel      shared.Selector
		edit     func(*shared.Machine)
		match    bool
		wantFail string // substring of the problem when it does not match
	}{
		{name: "empty selector matches all", match: true},
		{name: "label matches", sel: shared.Selector{Labels: map[string]string{"rack": "r1"}}, match: true},
		{name: "label differs", sel: shared.Selector{Labels: map[string]string{"rack": "r2"}},
			wantFail: "label rack=r2 (machine has rack=r1)"},
		{name: "label missing", sel: shared.Selector{Labels: map[string]string{"zone": "a"}},
			wantFail: "label zone=a (machine has no zone label)"},
		{name: "cores enough", sel: shared.Selector{MinCores: 32}, match: true},
		{name: "cores short", sel: shared.Selector{MinCores: 33}, wantFail: "min_cores 33 (machine has 32"},
		{name: "cores fall back to threads", sel: shared.Selector{MinCores: 8}, match: true,
			edit: func(m *shared.Machine) { m.Inventory.CPU = shared.CPU{Threads: 8} }},
		{name: "cpu inventory failed is named", sel: shared.Selector{MinCores: 1},
			edit: func(m *shared.Machine) {
				m.Inventory.CPU = shared.CPU{}
				m.Inventory.Errors = map[string]string{shared.SectionCPU: "no /proc/cpuinfo"}
			},
			wantFail: "inventory of cpu failed: no /proc/cpuinfo"},
		{name: "memory from DIMMs", sel: shared.Selector{MinMemoryGB: 128}, match: true},
		{name: "memory short", sel: shared.Selector{MinMemoryGB: 129}, wantFail: "min_memory_gb 129"},
		{name: "memory without DIMMs allows kernel reserve", sel: shared.Selector{MinMemoryGB: 64}, match: true,
			edit: func(m *shared.Machine) {
				m.Inventory.Memory = shared.Memory{TotalBytes: 62*gib + 700<<20} // what a 64 GiB box reports
			}},
		{name: "memory without DIMMs really short", sel: shared.Selector{MinMemoryGB: 64},
			edit:     func(m *shared.Machine) { m.Inventory.Memory = shared.Memory{TotalBytes: 48 * gib} },
			wantFail: "min_memory_gb 64 (machine has 48.0 GiB)"},
		{name: "disk size any type", sel: shared.Selector{MinDiskGB: 3000}, match: true},
		{name: "disk size too big", sel: shared.Selector{MinDiskGB: 4000},
			wantFail: "a non-removable any-type disk of at least 4000 GB"},
		{name: "disk type and size", sel: shared.Selector{MinDiskGB: 200, DiskType: "ssd"}, match: true},
		{name: "disk type ok but too small", sel: shared.Selector{MinDiskGB: 300, DiskType: "ssd"},
			wantFail: "non-removable ssd disk of at least 300 GB"},
		{name: "disk type only", sel: shared.Selector{DiskType: "nvme"}, match: true},
		{name: "disk type absent", sel: shared.Selector{DiskType: "hdd"}, wantFail: "non-removable hdd disk"},
		{name: "removable disk does not count", sel: shared.Selector{DiskType: "ssd", MinDiskGB: 10},
			edit:     func(m *shared.Machine) { m.Inventory.Disks = m.Inventory.Disks[3:] },
			wantFail: "sdb ssd 32 GB removable"},
		{name: "nic count physical only", sel: shared.Selector{MinNICs: 3}, match: true},
		{name: "nic count short (bridge is virtual)", sel: shared.Selector{MinNICs: 4},
			wantFail: "4 physical NIC(s) (machine has 3)"},
		{name: "nic speed", sel: shared.Selector{MinNICSpeedMbps: 25000}, match: true},
		{name: "nic speed too fast (bridge does not count)", sel: shared.Selector{MinNICSpeedMbps: 40000},
			wantFail: "1 physical NIC(s) of at least 40000 Mb/s (machine has 0)"},
		{name: "nic count and speed together", sel: shared.Selector{MinNICs: 2, MinNICSpeedMbps: 25000}, match: true},
		{name: "nic count at speed short", sel: shared.Selector{MinNICs: 3, MinNICSpeedMbps: 25000},
			wantFail: "3 physical NIC(s) of at least 25000 Mb/s (machine has 2)"},
		{name: "pci vendor by name substring", sel: shared.Selector{PCIVendor: "mellanox"}, match: true},
		{name: "pci vendor by hex id", sel: shared.Selector{PCIVendor: "15B3"}, match: true},
		{name: "pci vendor by 0x id", sel: shared.Selector{PCIVendor: "0x8086"}, match: true},
		{name: "pci vendor absent", sel: shared.Selector{PCIVendor: "nvidia"}, wantFail: `pci_vendor "nvidia"`},
		{name: "pci id absent", sel: shared.Selector{PCIVendor: "10de"}, wantFail: `pci_vendor "10de"`},
		{name: "firmware", sel: shared.Selector{Firmware: "uefi"}, match: true},
		{name: "firmware differs", sel: shared.Selector{Firmware: "bios"}, wantFail: "firmware bios (machine has uefi)"},
		{name: "firmware unknown", sel: shared.Selector{Firmware: "bios"},
			edit:     func(m *shared.Machine) { m.Inventory.System.Firmware = "" },
			wantFail: "firmware bios (machine has unknown)"},
		{name: "all fields at once", match: true, sel: shared.Selector{
			Labels: map[string]string{"rack": "r1"}, MinCores: 16, MinMemoryGB: 64, MinDiskGB: 900,
			DiskType: "nvme", MinNICs: 2, MinNICSpeedMbps: 10000, PCIVendor: "intel", Firmware: "uefi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := server("m-1", map[string]string{"rack": "r1"})
			if tt.edit != nil {
				tt.edit(m)
			}
			r := role("only", tt.sel)
			if err := r.Validate(); err != nil {
				t.Fatalf("test role invalid: %v", err)
			}
			got, problem := Match([]shared.Role{r}, m)
			if tt.match {
				if got == nil || got.Name != "only" || problem != "" {
					t.Fatalf("Match = %v, %q; want role only", got, problem)
				}
				return
			}
			if got != nil {
				t.Fatalf("Match = role %s; want no match", got.Name)
			}
			if !strings.HasPrefix(problem, "no role matches: closest is role only") || !strings.Contains(problem, tt.wantFail) {
				t.Fatalf("problem = %q; want it to contain %q", problem, tt.wantFail)
			}
		})
	}
}

func TestMatchChoosesAndExplains(t *testing.T) {
	big := role("big", shared.Selector{MinCores: 64, MinMemoryGB: 512})
	gpu := role("gpu", shared.Selector{PCIVendor: "nvidia"})
	rack1 := role("rack1", shared.Selector{Labels: map[string]string{"rack": "r1"}})
	anyRole := role("any", shared.Selector{})
	uefi := role("uefi", shared.Selector{Firmware: "uefi"})

	tests := []struct {
		name    string
		roles   []shared.Role
		want    string // matched role, or "" for none
		problem string // exact problem
	}{
		{name: "one of several", roles: []shared.Role{big, rack1, gpu}, want: "rack1"},
		{name: "ambiguous two", roles: []shared.Role{uefi, gpu, rack1},
			problem: "ambiguous: roles rack1, uefi both match; make their selectors exclusive (labels help)"},
		{name: "ambiguous three, sorted", roles: []shared.Role{uefi, anyRole, rack1},
			problem: "ambiguous: roles any, rack1, uefi all match; make their selectors exclusive (labels help)"},
		{name: "closest is the one with fewest failed fields", roles: []shared.Role{big, gpu},
			problem: `no role matches: closest is role gpu, which wants pci_vendor "nvidia" (no such device among 2)`},
		{name: "closest tie goes to the first name", roles: []shared.Role{role("zeta", shared.Selector{MinCores: 99}),
			role("alpha", shared.Selector{Firmware: "bios"})},
			problem: "no role matches: closest is role alpha, which wants firmware bios (machine has uefi)"},
		{name: "no roles at all", problem: "no role matches: no roles are defined (rivet roles apply)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, problem := Match(tt.roles, server("m-1", map[string]string{"rack": "r1"}))
			name := ""
			if got != nil {
				name = got.Name
			}
			if name != tt.want || problem != tt.problem {
				t.Fatalf("Match = %q, %q\nwant    %q, %q", name, problem, tt.want, tt.problem)
			}
		})
	}
}

// TestFactsNeverSatisfyLabels: what an agent says of itself (facts) does not pass a
// selector on an operator label of the same name, and a facts: selector reads only facts.
func TestFactsNeverSatisfyLabels(t *testing.T) {
	m := server("m-1", nil)
	m.Facts = map[string]string{"rack": "r1", "pool": "swarm"}
	rack := role("rack1", shared.Selector{Labels: map[string]string{"rack": "r1"}})
	if got, problem := Match([]shared.Role{rack}, m); got != nil ||
		!strings.Contains(problem, "label rack=r1 (machine has no rack label)") {
		t.Fatalf("an agent's fact rack=r1 satisfied the operator label selector: %v, %q", got, problem)
	}
	byFact := role("pool", shared.Selector{Facts: map[string]string{"pool": "swarm"}})
	if got, problem := Match([]shared.Role{byFact}, m); got == nil {
		t.Fatalf("facts: selector did not match the agent's fact: %q", problem)
	}
	m.Facts, m.Labels = nil, map[string]string{"pool": "swarm"}
	if got, problem := Match([]shared.Role{byFact}, m); got != nil || !strings.Contains(problem, "fact pool=swarm") {
		t.Fatalf("facts: selector matched an operator label instead: %v, %q", got, problem)
	}
}

func TestMatchTwoFailedFieldsAreBothNamed(t *testing.T) {
	r := role("big", shared.Selector{MinCores: 64, MinMemoryGB: 512})
	_, problem := Match([]shared.Role{r}, server("m-1", nil))
	for _, want := range []string{"min_cores 64 (machine has 32)", "min_memory_gb 512 (machine has 125.0 GiB)"} {
		if !strings.Contains(problem, want) {
			t.Errorf("problem %q lacks %q", problem, want)
		}
	}
}

func TestMatchWithoutInventory(t *testing.T) {
	m := server("m-1", nil)
	m.Inventory = nil
	got, problem := Match([]shared.Role{role("any", shared.Selector{})}, m)
	if got != nil || !strings.Contains(problem, "no inventory") {
		t.Fatalf("Match = %v, %q; want a no-inventory problem", got, problem)
	}
}

func TestDryRun(t *testing.T) {
	roles := []shared.Role{
		role("rack1", shared.Selector{Labels: map[string]string{"rack": "r1"}}),
		role("rack2", shared.Selector{Labels: map[string]string{"rack": "r2"}}),
		role("storage", shared.Selector{DiskType: "hdd"}),
	}
	roles[2].Swarm.Role = shared.SwarmNone
	noInv := server("m-5", map[string]string{"rack": "r1"})
	noInv.Inventory = nil
	hdd := server("m-6", map[string]string{"rack": "r2"})
	hdd.Inventory.Disks = append(hdd.Inventory.Disks, shared.Disk{Name: "sdc", Type: "hdd", SizeBytes: 8000 * diskGB})
	storage := server("m-7", map[string]string{"rack": "r5"})
	storage.Inventory.Disks = hdd.Inventory.Disks
	// m-0 is already placed as a manager in rack r1: the dry run must count it.
	placed := server("m-0", map[string]string{"rack": "r1"})
	placed.State, placed.Role, placed.SwarmNodeID = shared.StateReady, "rack1", "node0" // in the swarm: nobody inits
	placed.Plan = &shared.Plan{Role: "rack1", Steps: []shared.Step{{Name: "swarm", Kind: shared.StepSwarm,
		Swarm: &shared.SwarmStep{Role: shared.SwarmManager}}}}
	retired := server("m-9", map[string]string{"rack": "r3"})
	retired.State = shared.StateRetired
	// m-8 matches rack1 on every field but waits for admission: it gets no role.
	waiting := server("m-8", map[string]string{"rack": "r1"})
	waiting.Admission = nil
	machines := []*shared.Machine{
		server("m-4", map[string]string{"rack": "r2"}), server("m-2", map[string]string{"rack": "r1"}),
		server("m-3", map[string]string{"rack": "r3"}), server("m-1", map[string]string{"rack": "r1"}),
		noInv, hdd, storage, placed, retired, waiting,
	}
	got := DryRun(roles, machines, PlacementOptions{})
	want := []shared.RoleMatch{
		// r1 already has manager m-0, so r2 gets the next one, then r1 again.
		{MachineID: "m-1", Role: "rack1", Swarm: shared.SwarmManager},
		{MachineID: "m-2", Role: "rack1", Swarm: shared.SwarmWorker},
		{MachineID: "m-3", Problem: "no role matches: closest is role rack1, which wants label rack=r1 (machine has rack=r3)"},
		{MachineID: "m-4", Role: "rack2", Swarm: shared.SwarmManager},
		{MachineID: "m-5", Problem: "no role matches: the machine has sent no inventory yet"},
		{MachineID: "m-6", Problem: "ambiguous: roles rack2, storage both match; make their selectors exclusive (labels help)"},
		{MachineID: "m-7", Role: "storage", Swarm: shared.SwarmNone},
		{MachineID: "m-8", Problem: shared.NotAdmitted("m-8")},
	}
	if len(got) != len(want) {
		t.Fatalf("DryRun returned %d answers, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("DryRun[%d] = %+v\n          want %+v", i, got[i], want[i])
		}
	}
}
