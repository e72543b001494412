package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// TestCollectThisMachine inventories the machine the test runs on and checks the result
// against what the kernel says directly.
func TestCollectThisMachine(t *testing.T) {
	opts := Options{}
	if !hasRealDisk(t) {
		// Containers and some VMs show no block device at all: give the test one.
		opts.IncludeLoop = true
		newLoopDevice(t, 16<<20)
	}
	inv := Collect(context.Background(), opts)
	if len(inv.Errors) != 0 {
		t.Errorf("section errors on a healthy machine: %v", inv.Errors)
	}
	if err := inv.Validate(); err != nil {
		t.Errorf("inventory does not validate: %v", err)
	}
	if inv.CollectedAt.IsZero() || inv.TookMillis < 0 {
		t.Errorf("collected_at %v took %d ms", inv.CollectedAt, inv.TookMillis)
	}

	if inv.CPU.Model == "" || inv.CPU.Threads < 1 || inv.CPU.Cores < 1 || inv.CPU.Sockets < 1 {
		t.Errorf("cpu = %+v, want a model and counts", inv.CPU)
	}
	if inv.Memory.TotalBytes == 0 {
		t.Error("memory total is 0")
	}
	if mt := memTotal(t); inv.Memory.TotalBytes < mt {
		t.Errorf("memory total %d is less than MemTotal %d: installed memory is at least what the kernel manages", inv.Memory.TotalBytes, mt)
	}

	if len(inv.Disks) == 0 {
		t.Fatal("no disks")
	}
	for _, d := range inv.Disks {
		sectors, err := strconv.ParseUint(readSys(t, "block", d.Name, "size"), 10, 64)
		if err != nil || d.SizeBytes == 0 || d.SizeBytes != sectors*512 {
			t.Errorf("disk %s: size %d, sysfs says %d sectors (%v)", d.Name, d.SizeBytes, sectors, err)
		}
		if d.Type == "" {
			t.Errorf("disk %s has no type", d.Name)
		}
	}

	withMAC := 0
	for _, n := range inv.NICs {
		if n.MAC == "" {
			continue
		}
		withMAC++
		if got := strings.ToLower(readSys(t, "class", "net", n.Name, "address")); got != n.MAC {
			t.Errorf("nic %s: mac %s, sysfs says %s", n.Name, n.MAC, got)
		}
	}
	if withMAC == 0 {
		t.Errorf("no NIC with a MAC address: %+v", inv.NICs)
	}

	pciDevs, _ := os.ReadDir("/sys/bus/pci/devices")
	if len(inv.PCI) != len(pciDevs) {
		t.Errorf("%d PCI devices, sysfs lists %d", len(inv.PCI), len(pciDevs))
	}
	if len(pciDevs) > 0 {
		named := 0
		for _, p := range inv.PCI {
			if p.Vendor != "" {
				named++
			}
		}
		if named == 0 {
			t.Errorf("no PCI device has a vendor name: %+v", inv.PCI)
		}
	}
	if inv.Load.UptimeSeconds == 0 {
		t.Error("uptime is 0")
	}

	// What the agent sends must pass the coordinator's strict decoder.
	body, err := json.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	var back shared.Inventory
	if err := shared.DecodeBytes(body, &back); err != nil {
		t.Errorf("the coordinator would refuse this inventory: %v", err)
	}
}

func TestMachineIDIsStableAcrossCollections(t *testing.T) {
	first, err := shared.DeriveMachineID(Collect(context.Background(), Options{}))
	if err != nil {
		t.Fatalf("no machine id from this machine's inventory: %v", err)
	}
	second, err := shared.DeriveMachineID(Collect(context.Background(), Options{}))
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Errorf("machine id changed between two collections: %+v then %+v", first, second)
	}
	if err := first.ID.Validate(); err != nil {
		t.Error(err)
	}
}

func TestSystemUUIDOverride(t *testing.T) {
	const uuid = "6b1f3f3e-7d2a-4c55-9a0e-2f1d5c3b9a10"
	inv := Collect(context.Background(), Options{SystemUUID: uuid})
	if inv.System.UUID != uuid {
		t.Fatalf("uuid = %q, want the override %q", inv.System.UUID, uuid)
	}
	id, err := shared.DeriveMachineID(inv)
	if err != nil || id.Basis != "uuid" {
		t.Errorf("machine id = %+v, %v; want one derived from the overriding uuid", id, err)
	}
}

// TestFailingSectionKeepsTheOthers breaks sections in every way they can break: an
// error, a panic, a section that never returns, and a missing pci.ids.
func TestFailingSectionKeepsTheOthers(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope", "pci.ids")
	c := newCollector(Options{PCIIDsPath: missing})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var sections []section
	for _, s := range c.sections() {
		switch s.name {
		case shared.SectionCPU:
			s.collect = func(context.Context) (func(*shared.Inventory), error) {
				return nil, errors.New("cpuinfo exploded")
			}
		case shared.SectionMemory:
			s.collect = func(context.Context) (func(*shared.Inventory), error) {
				panic("index out of range [3] with length 3") // as ghw has on odd sysfs trees
			}
		case shared.SectionLoad:
			s.collect = func(context.Context) (func(*shared.Inventory), error) {
				<-release // hangs, like a read from a dying device
				return func(inv *shared.Inventory) { inv.Load.Load1 = 99 }, nil
			}
		}
		sections = append(sections, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	inv := c.run(ctx, sections)

	for section, want := range map[string]string{
		shared.SectionCPU:    "cpuinfo exploded",
		shared.SectionMemory: "panic",
		shared.SectionLoad:   "not finished",
		shared.SectionPCI:    missing,
	} {
		if !strings.Contains(inv.Errors[section], want) {
			t.Errorf("errors[%s] = %q, want it to mention %q", section, inv.Errors[section], want)
		}
	}
	t.Logf("the panic as recorded: %s", inv.Errors[shared.SectionMemory])
	for _, ok := range []string{shared.SectionSystem, shared.SectionDisks, shared.SectionNICs} {
		if msg, failed := inv.Errors[ok]; failed {
			t.Errorf("section %s failed too: %s", ok, msg)
		}
	}
	if len(inv.NICs) == 0 || inv.System.Firmware == "" {
		t.Errorf("the healthy sections were lost: nics %v, system %+v", inv.NICs, inv.System)
	}
	if pciDevs, _ := os.ReadDir("/sys/bus/pci/devices"); len(inv.PCI) != len(pciDevs) {
		t.Errorf("without pci.ids the %d PCI devices must still be listed by id, got %d", len(pciDevs), len(inv.PCI))
	}
	if inv.Load.Load1 == 99 {
		t.Error("a section that missed the deadline wrote into the inventory")
	}
	if err := inv.Validate(); err != nil {
		t.Errorf("a partial inventory must still validate: %v", err)
	}
}

func hasRealDisk(t *testing.T) bool {
	t.Helper()
	c := newCollector(Options{})
	entries, _ := os.ReadDir("/sys/block")
	for _, e := range entries {
		size, _ := strconv.ParseUint(readSys(t, "block", e.Name(), "size"), 10, 64)
		if !c.skipDisk(e.Name(), size*512) {
			return true
		}
	}
	return false
}

func readSys(t *testing.T, elem ...string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(append([]string{"/sys"}, elem...)...))
	if err != nil {
		t.Errorf("reading sysfs: %v", err)
	}
	return strings.TrimSpace(string(data))
}

func memTotal(t *testing.T) uint64 {
	t.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// TestCollectTrimsToTheCoordinatorsLimits: a machine with more partitions than the
// coordinator keeps still produces an inventory the coordinator accepts, with the trim
// noted, instead of one whose registration would be refused.
func TestCollectTrimsToTheCoordinatorsLimits(t *testing.T) {
	c := newCollector(Options{})
	disk := shared.Disk{Name: "sda", SizeBytes: 1 << 40, Serial: "S1"}
	for i := range 300 {
		disk.Partitions = append(disk.Partitions, shared.Partition{Name: fmt.Sprintf("sda%d", i+1), SizeBytes: 1 << 20})
	}
	sections := []section{{name: shared.SectionDisks, collect: func(context.Context) (func(*shared.Inventory), error) {
		return func(inv *shared.Inventory) { inv.Disks = []shared.Disk{disk} }, nil
	}}}
	inv := c.run(context.Background(), sections)
	if err := inv.Validate(); err != nil {
		t.Fatalf("the collected inventory is refused: %v", err)
	}
	if got := len(inv.Disks[0].Partitions); got != shared.MaxPartitionsPerDisk {
		t.Fatalf("%d partitions kept, want %d", got, shared.MaxPartitionsPerDisk)
	}
	if !strings.Contains(inv.Errors[shared.SectionDisks], "trimmed: 300 partitions on sda, kept 128") {
		t.Fatalf("no trim note: errors = %v", inv.Errors)
	}
}
