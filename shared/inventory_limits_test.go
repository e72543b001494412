package shared

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func bigDisk(name string, parts int) Disk {
	d := Disk{Name: name, SizeBytes: 1 << 40, Serial: "S-" + name}
	for i := range parts {
		d.Partitions = append(d.Partitions, Partition{Name: fmt.Sprintf("%sp%d", name, i+1), SizeBytes: 1 << 20})
	}
	return d
}

// TestInventoryCapsNameTheLimit: every list and string over its cap is refused with
// the limit in the error.
func TestInventoryCapsNameTheLimit(t *testing.T) {
	long := strings.Repeat("x", MaxInventoryString+1)
	tests := []struct {
		name string
		edit func(inv *Inventory)
		want string
	}{
		{"disks", func(inv *Inventory) {
			for i := range MaxDisks + 1 {
				inv.Disks = append(inv.Disks, Disk{Name: fmt.Sprintf("sd%d", i)})
			}
		}, fmt.Sprintf("%d disks, over the limit of %d", MaxDisks+1, MaxDisks)},
		{"partitions per disk", func(inv *Inventory) { inv.Disks = []Disk{bigDisk("sda", MaxPartitionsPerDisk+1)} },
			fmt.Sprintf("partitions on disks[0], over the limit of %d", MaxPartitionsPerDisk)},
		{"partitions in all", func(inv *Inventory) {
			for i := range MaxPartitions/MaxPartitionsPerDisk + 1 {
				inv.Disks = append(inv.Disks, bigDisk(fmt.Sprintf("sd%d", i), MaxPartitionsPerDisk))
			}
		}, fmt.Sprintf("partitions in all, over the limit of %d", MaxPartitions)},
		{"nics", func(inv *Inventory) { inv.NICs = make([]NIC, MaxNICs+1) }, fmt.Sprintf("over the limit of %d", MaxNICs)},
		{"nic addresses", func(inv *Inventory) { inv.NICs = []NIC{{Name: "eth0", Addrs: make([]string, MaxNICAddrs+1)}} },
			fmt.Sprintf("addresses on nics[0], over the limit of %d", MaxNICAddrs)},
		{"pci", func(inv *Inventory) { inv.PCI = make([]PCIDevice, MaxPCIDevices+1) }, fmt.Sprintf("pci devices, over the limit of %d", MaxPCIDevices)},
		{"cpu flags", func(inv *Inventory) { inv.CPU.Flags = make([]string, MaxCPUFlags+1) }, fmt.Sprintf("cpu flags, over the limit of %d", MaxCPUFlags)},
		{"dimms", func(inv *Inventory) { inv.Memory.DIMMs = make([]DIMM, MaxDIMMs+1) }, fmt.Sprintf("dimms, over the limit of %d", MaxDIMMs)},
		{"errors", func(inv *Inventory) {
			inv.Errors = map[string]string{}
			for i := range MaxInventoryErrors + 1 {
				inv.Errors[fmt.Sprint(i)] = "x"
			}
		}, fmt.Sprintf("section errors, over the limit of %d", MaxInventoryErrors)},
		{"model", func(inv *Inventory) { inv.CPU.Model = long }, fmt.Sprintf("cpu.model is %d bytes, over the limit of %d", len(long), MaxInventoryString)},
		{"partition label", func(inv *Inventory) {
			inv.Disks = []Disk{bigDisk("sda", 1)}
			inv.Disks[0].Partitions[0].Label = long
		}, "disks[0].partitions[0].label is"},
		{"pci product", func(inv *Inventory) { inv.PCI = []PCIDevice{{Address: "0000:00:01.0", Product: long}} }, "pci[0].product is"},
		{"nic name", func(inv *Inventory) { inv.NICs = []NIC{{Name: strings.Repeat("n", MaxDeviceName+1)}} },
			fmt.Sprintf("over the limit of %d", MaxDeviceName)},
		{"error text", func(inv *Inventory) { inv.Errors = map[string]string{"pci": strings.Repeat("e", MaxInventoryNote+1)} },
			fmt.Sprint(MaxInventoryNote)},
		{"encoded size", func(inv *Inventory) {
			for i := range 200 {
				d := Disk{Name: fmt.Sprintf("sd%d", i), Model: long[:MaxInventoryString], Serial: long[:MaxInventoryString],
					WWN: long[:MaxInventoryString]}
				inv.Disks = append(inv.Disks, d)
			}
			for i := range 1000 {
				inv.PCI = append(inv.PCI, PCIDevice{Address: fmt.Sprint(i), Vendor: long[:MaxInventoryString], Product: long[:MaxInventoryString]})
			}
		}, fmt.Sprintf("over the limit of %d bytes", MaxInventoryBytes)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := &Inventory{}
			tt.edit(inv)
			err := inv.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// TestEmptyPartitionFloodIsRefused is the attack from issue 13: a 1 MiB registration of
// empty partition objects, ~348,000 of them. It is refused as a 400 that names the limit.
func TestEmptyPartitionFloodIsRefused(t *testing.T) {
	head, tail := `{"mode":"ram","version":"v","inventory":{"disks":[{"name":"sda","partitions":[{}`, `]}]}}`
	body := []byte(head + strings.Repeat(",{}", (MaxBody-len(head)-len(tail))/3) + tail)
	if len(body) > MaxBody {
		t.Fatalf("flood is %d bytes, over the body limit", len(body))
	}
	var req RegisterRequest
	err := DecodeBytes(body, &req)
	if StatusOf(err) != 400 || !strings.Contains(err.Error(), fmt.Sprintf("over the limit of %d", MaxPartitionsPerDisk)) {
		t.Fatalf("the partition flood: %v, want a 400 naming the limit of %d partitions", err, MaxPartitionsPerDisk)
	}
	t.Logf("a %d-byte registration with %d empty partitions is refused: %v", len(body), bytes.Count(body, []byte("{}")), err)
}

// TestFitMakesABigRealMachineRegister: a real machine over the caps (a JBOD with
// hundreds of partitions, a long firmware string) is trimmed by the agent to an
// inventory the coordinator accepts, with the trims noted.
func TestFitMakesABigRealMachineRegister(t *testing.T) {
	inv := &Inventory{CPU: CPU{Model: strings.Repeat("é", MaxInventoryString)}, Errors: map[string]string{"pci": "no pci.ids"}}
	inv.Disks = []Disk{bigDisk("sda", 300), bigDisk("sdb", 3)}
	for i := range MaxDisks + 10 {
		inv.Disks = append(inv.Disks, bigDisk(fmt.Sprintf("sdx%d", i), 5))
	}
	inv.PCI = make([]PCIDevice, MaxPCIDevices+5)
	if inv.Validate() == nil {
		t.Fatal("the test inventory is within the caps already")
	}
	notes := inv.Fit()
	if err := inv.Validate(); err != nil {
		t.Fatalf("after Fit: %v (notes %q)", err, notes)
	}
	if got := len(inv.Disks[0].Partitions); got != MaxPartitionsPerDisk {
		t.Errorf("sda keeps %d partitions, want %d", got, MaxPartitionsPerDisk)
	}
	if len(inv.Disks[1].Partitions) != 3 || inv.Disks[0].Name != "sda" || len(inv.Disks) != MaxDisks {
		t.Errorf("Fit kept the wrong disks: %d disks, sdb has %d partitions", len(inv.Disks), len(inv.Disks[1].Partitions))
	}
	for _, want := range []string{"300 partitions on sda, kept 128", "disks, kept the first 256"} {
		if !strings.Contains(inv.Errors[SectionDisks], want) {
			t.Errorf("errors[disks] = %q, want a note %q", inv.Errors[SectionDisks], want)
		}
	}
	if !strings.HasPrefix(inv.Errors[SectionPCI], "no pci.ids; trimmed: ") {
		t.Errorf("errors[pci] = %q: the section's own error must be kept, the trim added", inv.Errors[SectionPCI])
	}
	if !strings.HasPrefix(inv.CPU.Model, "é") || len(inv.CPU.Model) > MaxInventoryString || !strings.HasSuffix(inv.CPU.Model, "é") {
		t.Errorf("cpu model cut badly: %d bytes", len(inv.CPU.Model))
	}
	// Maximal strings everywhere: Fit still gets under the encoded-size cap.
	huge := &Inventory{}
	s := strings.Repeat("y", MaxInventoryString)
	for i := range MaxPCIDevices {
		huge.PCI = append(huge.PCI, PCIDevice{Address: fmt.Sprint(i), Vendor: s, Product: s, Class: s})
	}
	for i := range MaxDisks {
		huge.Disks = append(huge.Disks, Disk{Name: fmt.Sprint("d", i), Model: s, Serial: s, WWN: s})
	}
	huge.Fit()
	if err := huge.Validate(); err != nil {
		t.Fatalf("Fit left an inventory over the caps: %v", err)
	}
}
