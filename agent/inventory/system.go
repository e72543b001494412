package inventory

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/jaypipes/ghw"
	"github.com/shirou/gopsutil/v3/host"
	"github.com/shirou/gopsutil/v3/load"
	gomem "github.com/shirou/gopsutil/v3/mem"

	"github.com/rivetmetal/rivet/shared"
)

// ghwOptions keeps ghw to sysfs and procfs: no external tools (ethtool, lsblk) that an
// initramfs does not have, and its warnings go to our logger.
func (c *collector) ghwOptions() []any {
	return []any{ghw.WithDisableTools(), ghw.WithLogger(c.log.With("component", "ghw"))}
}

// system reads the DMI identity straight from /sys/class/dmi/id rather than through
// ghw, which hides why a value is missing: a product_uuid that exists but cannot be read
// (not root) must be an error, since the machine id would silently change.
func (c *collector) system(ctx context.Context) (func(*shared.Inventory), error) {
	sys := shared.System{Firmware: "bios"}
	if fileExists(c.sys.path("firmware", "efi")) {
		sys.Firmware = "uefi"
	}
	if h, err := os.Hostname(); err == nil && h != "(none)" {
		sys.Hostname = truncate(h, 255)
	}
	var errs []error
	dmi := func(attr string) string {
		data, err := os.ReadFile(c.sys.path("class", "dmi", "id", attr))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("dmi %s: %w (the agent must run as root)", attr, err))
			}
			return ""
		}
		return clean(string(data))
	}
	if !fileExists(c.sys.path("class", "dmi", "id")) {
		c.log.Debug("no DMI table: the machine id will come from the MAC address unless --system-uuid is set")
	}
	sys.Vendor = dmi("sys_vendor")
	sys.Product = dmi("product_name")
	sys.Serial = dmi("product_serial")
	sys.UUID = strings.ToLower(dmi("product_uuid"))
	sys.BIOS = dmi("bios_version")
	return func(inv *shared.Inventory) { inv.System = sys }, errors.Join(errs...)
}

// placementFlags are the CPU flags a role or an operator may care about: virtualisation,
// vector units, crypto, 1 GiB pages, and whether the machine is itself a VM.
var placementFlags = []string{
	"aes", "avx", "avx2", "avx512bw", "avx512f", "avx512vl", "bmi2", "fma", "hypervisor",
	"lm", "pdpe1gb", "popcnt", "rdrand", "sha_ni", "sse4_2", "svm", "vmx",
	// arm64 (from the Features line)
	"asimd", "sha2", "crc32", "atomics", "sve",
}

func (c *collector) cpu(ctx context.Context) (func(*shared.Inventory), error) {
	info, err := ghw.CPU(c.ghwOptions()...)
	if err != nil {
		return nil, fmt.Errorf("reading /proc/cpuinfo: %w", err)
	}
	if len(info.Processors) == 0 {
		return nil, errors.New("no processors found in /proc/cpuinfo")
	}
	out := shared.CPU{
		Model:   clean(info.Processors[0].Model),
		Sockets: len(info.Processors),
		Cores:   int(info.TotalCores),
		Threads: int(info.TotalHardwareThreads),
	}
	seen := map[string]bool{}
	for _, p := range info.Processors {
		for _, f := range p.Capabilities {
			seen[f] = true
		}
	}
	for _, f := range placementFlags {
		if seen[f] {
			out.Flags = append(out.Flags, f)
		}
	}
	slices.Sort(out.Flags)
	return func(inv *shared.Inventory) { inv.CPU = out }, nil
}

// memory sizes the installed memory by counting the kernel's memory blocks, which gives
// what the DIMMs add up to (24 GiB, not the 23.5 GiB MemTotal leaves after the kernel's
// reservations), so that a role asking for min_memory_gb: 24 matches a 24 GiB machine.
// ghw does the same but reads every block's state file, which made memory the slowest
// section; an offline block is still installed memory, so counting suffices. Kernels
// without memory hotplug have no blocks: MemTotal is the fallback there.
func (c *collector) memory(ctx context.Context) (func(*shared.Inventory), error) {
	mem := shared.Memory{DIMMs: c.sys.dimms()}
	fill := func(inv *shared.Inventory) { inv.Memory = mem }
	if total := c.sys.memoryBlockBytes(); total > 0 {
		mem.TotalBytes = total
		return fill, nil
	}
	vm, err := gomem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return fill, fmt.Errorf("reading memory size: no memory blocks in sysfs, and /proc/meminfo: %w", err)
	}
	mem.TotalBytes = vm.Total
	return fill, nil
}

// memoryBlockBytes is the number of memory blocks times their size, 0 when unknown.
func (s sysfs) memoryBlockBytes() uint64 {
	size, err := strconv.ParseUint(s.read("devices", "system", "memory", "block_size_bytes"), 16, 64)
	if err != nil || size == 0 {
		return 0
	}
	entries, err := os.ReadDir(s.path("devices", "system", "memory"))
	if err != nil {
		return 0
	}
	var blocks uint64
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), "memory"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
			blocks++
		}
	}
	return blocks * size
}

// dimms reads the SMBIOS memory devices (type 17) that the dmi-sysfs driver exposes
// under /sys/firmware/dmi/entries. Without the driver, or without root, there are none:
// DIMMs are a nicety, so that is not an error.
func (s sysfs) dimms() []shared.DIMM {
	entries, _ := filepath.Glob(s.path("firmware", "dmi", "entries", "17-*", "raw"))
	var out []shared.DIMM
	for _, e := range entries {
		raw, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		if d, ok := parseMemoryDevice(raw); ok {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b shared.DIMM) int { return strings.Compare(a.Locator, b.Locator) })
	return out
}

// parseMemoryDevice decodes one SMBIOS type 17 structure; ok is false for empty slots
// and structures too short to hold a size.
func parseMemoryDevice(raw []byte) (shared.DIMM, bool) {
	if len(raw) < 0x15 || raw[0] != 17 || int(raw[1]) > len(raw) || raw[1] < 0x15 {
		return shared.DIMM{}, false
	}
	formatted := raw[:raw[1]]
	strs := smbiosStrings(raw[raw[1]:])
	str := func(off int) string {
		if off >= len(formatted) || formatted[off] == 0 || int(formatted[off]) > len(strs) {
			return ""
		}
		return clean(strs[formatted[off]-1])
	}
	var size uint64
	switch v := binary.LittleEndian.Uint16(formatted[0x0c:]); {
	case v == 0 || v == 0xffff:
		return shared.DIMM{}, false // no module installed, or size unknown
	case v == 0x7fff && len(formatted) >= 0x20:
		size = uint64(binary.LittleEndian.Uint32(formatted[0x1c:])&0x7fffffff) << 20
	case v&0x8000 != 0:
		size = uint64(v&0x7fff) << 10
	default:
		size = uint64(v) << 20
	}
	d := shared.DIMM{Locator: str(0x10), SizeBytes: size, Type: memoryTypes[formatted[0x12]]}
	if len(formatted) > 0x17 {
		d.Vendor = str(0x17)
	}
	return d, true
}

// smbiosStrings splits the string set that follows a structure's formatted area.
func smbiosStrings(b []byte) []string {
	var out []string
	for len(b) > 0 && b[0] != 0 {
		end := slices.Index(b, 0)
		if end < 0 {
			end = len(b)
		}
		out = append(out, string(b[:end]))
		b = b[min(end+1, len(b)):]
	}
	return out
}

// memoryTypes names the SMBIOS memory type byte (DSP0134, 7.18.2).
var memoryTypes = map[byte]string{
	0x03: "DRAM", 0x07: "RAM", 0x0f: "SDRAM", 0x12: "DDR", 0x13: "DDR2", 0x18: "DDR3",
	0x1a: "DDR4", 0x1b: "LPDDR", 0x1c: "LPDDR2", 0x1d: "LPDDR3", 0x1e: "LPDDR4",
	0x1f: "Logical non-volatile device", 0x20: "HBM", 0x21: "HBM2", 0x22: "DDR5", 0x23: "LPDDR5",
	0x24: "HBM3",
}

func (c *collector) load(ctx context.Context) (func(*shared.Inventory), error) {
	var l shared.Load
	avg, err := load.AvgWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading load average: %w", err)
	}
	l.Load1, l.Load5, l.Load15 = avg.Load1, avg.Load5, avg.Load15
	up, err := host.UptimeWithContext(ctx)
	if err != nil {
		return func(inv *shared.Inventory) { inv.Load = l }, fmt.Errorf("reading uptime: %w", err)
	}
	l.UptimeSeconds = up
	return func(inv *shared.Inventory) { inv.Load = l }, nil
}
