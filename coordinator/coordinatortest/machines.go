package coordinatortest

import (
	"fmt"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// FakeInventory is a small, valid inventory for a simulated machine number i: its DMI
// UUID is derived from i, so the same i always registers as the same machine.
func FakeInventory(i int) shared.Inventory {
	return shared.Inventory{
		System: shared.System{Vendor: "Rivet Sim", Product: "SimBox 1", Serial: fmt.Sprintf("SIM%08d", i),
			UUID: fmt.Sprintf("5a5a0000-0000-4000-8000-%012x", i), Firmware: "uefi", Hostname: fmt.Sprintf("sim-%05d", i)},
		CPU:    shared.CPU{Model: "Simulated CPU @ 2.0GHz", Sockets: 1, Cores: 8, Threads: 16},
		Memory: shared.Memory{TotalBytes: 32 << 30},
		Disks: []shared.Disk{{Name: "nvme0n1", SizeBytes: 480 << 30, Type: "nvme", Model: "SimSSD",
			Serial: fmt.Sprintf("SSD%08d", i)}},
		NICs: []shared.NIC{{Name: "eth0", MAC: fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i)),
			Driver: "virtio_net", Link: true, SpeedMbps: 10000, PCIAddress: "0000:00:03.0"}},
		CollectedAt: time.Unix(1_700_000_000, 0).UTC(),
	}
}

// RegisterRequest is a registration for simulated machine i.
func RegisterRequest(i int) *shared.RegisterRequest {
	return &shared.RegisterRequest{Inventory: FakeInventory(i), Mode: shared.ModeRAM, Version: "sim"}
}

// Expected is the expected-machines row an operator would import for simulated machine
// i: its MAC, with labels as the operator's (role selectors and placement read them).
func Expected(i int, labels map[string]string) shared.ExpectedMachine {
	inv := FakeInventory(i)
	return shared.ExpectedMachine{MACs: []string{inv.NICs[0].MAC}, Labels: labels}
}
