package inventory

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

// fakeSysfs copies the fake tree in testdata/sysfs to a temporary directory and adds
// what a Go module cannot carry in testdata (file names with ':' and symlinks): PCI
// devices and network interfaces, linked the way the kernel links them.
func fakeSysfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS("testdata/sysfs")); err != nil {
		t.Fatal(err)
	}
	write := func(path, content string) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(path, target string) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	pciDev := func(addr, vendor, device, class, driver string) {
		dir := "devices/pci0000:00/" + addr
		write(dir+"/vendor", "0x"+vendor)
		write(dir+"/device", "0x"+device)
		write(dir+"/class", "0x"+class)
		if driver != "" {
			write("bus/pci/drivers/"+driver+"/bind", "")
			link(dir+"/driver", "../../../bus/pci/drivers/"+driver)
		}
		link("bus/pci/devices/"+addr, "../../../"+dir)
	}
	pciDev("0000:00:00.0", "8086", "2020", "060000", "")
	pciDev("0000:00:1f.6", "8086", "15b8", "020000", "e1000e")
	pciDev("0000:3b:00.0", "15b3", "1017", "020000", "mlx5_core")
	pciDev("0000:5e:00.0", "abcd", "0001", "ff0000", "")
	pciDev("0000:00:03.0", "1af4", "1041", "020000", "virtio-pci")
	pciDev("0000:00:14.0", "8086", "a36d", "0c0330", "xhci_hcd")

	netDev := func(name, devDir, mac, typ, carrier, speed string) {
		dir := filepath.Join(devDir, "net", name)
		write(dir+"/address", mac)
		write(dir+"/type", typ)
		if carrier != "" {
			write(dir+"/carrier", carrier)
		}
		if speed != "" {
			write(dir+"/speed", speed)
		}
		if !strings.Contains(devDir, "virtual") {
			link(dir+"/device", "../../../"+filepath.Base(devDir))
		}
		link("class/net/"+name, "../../"+dir)
	}
	netDev("eno1", "devices/pci0000:00/0000:00:1f.6", "3C:EC:EF:00:00:01", "1", "1", "1000")
	virtio := "devices/pci0000:00/0000:00:03.0/virtio2"
	write("bus/virtio/drivers/virtio_net/bind", "")
	link(virtio+"/driver", "../../../../bus/virtio/drivers/virtio_net")
	netDev("eth0", virtio, "52:54:00:12:34:56", "1", "1", "-1")
	usb := "devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0"
	netDev("enx001122334455", usb, "00:11:22:33:44:55", "1", "0", "")
	netDev("br0", "devices/virtual", "0a:00:00:00:00:01", "1", "0", "")
	netDev("lo", "devices/virtual", "00:00:00:00:00:00", "772", "1", "")
	netDev("sit0", "devices/virtual", "00:00:00:00", "776", "", "")
	write("class/net/bonding_masters", "")
	return root
}

func TestSysfsDiskIdentity(t *testing.T) {
	s := sysfs{root: fakeSysfs(t)}
	tests := []struct {
		disk string
		want diskIdentity
	}{
		// virtio-blk: the serial is an attribute of the block device; no WWN exists.
		{"vda", diskIdentity{Serial: "rvt-virtio-1"}},
		// NVMe: wwid on the namespace (udev's ID_WWN, verbatim), serial and model on the
		// controller, both space-padded by the drive.
		{"nvme0n1", diskIdentity{Serial: "S4EWNX0R123456", WWN: "eui.0025388b91b2c1e5",
			Model: "Samsung SSD 970 EVO Plus 1TB"}},
		// SATA through libata: the kernel's naa. wwid becomes udev's 0x form; the serial
		// comes from VPD page 0x80 without its padding.
		{"sda", diskIdentity{Serial: "BTYF83050ABC480BGN", WWN: "0x55cd2e404c1a2b3c", Model: "INTEL SSDSC2KB48"}},
		// SAS without a wwid attribute: the best NAA designator of the logical unit in
		// VPD page 0x83 (NAA 6 over NAA 5; the target port's designator is ignored).
		{"sdb", diskIdentity{Serial: "W0M1ABCD0000E8232XYZ", WWN: "0x6000c500a1b2c3d40000000000000001",
			Model: "ST600MM0009"}},
		// A t10 vendor id is not a world wide name.
		{"sdc", diskIdentity{Serial: "QM00001", Model: "QEMU HARDDISK"}},
		{"nosuchdisk", diskIdentity{}},
	}
	for _, tt := range tests {
		t.Run(tt.disk, func(t *testing.T) {
			if got := s.diskIdentity(tt.disk); got != tt.want {
				t.Errorf("diskIdentity(%s) = %+v, want %+v", tt.disk, got, tt.want)
			}
		})
	}
}

func TestVPDParsersRejectGarbage(t *testing.T) {
	for _, page := range [][]byte{nil, {0}, {0, 0x83, 0, 10}, {0, 0x80, 0xff, 0xff, 'A'}, {0, 0x83, 0, 8, 1, 3, 0, 200, 0x50}} {
		_ = parseVPDSerial(page) // must not panic, whatever the bytes
		if got := parseVPDWWN(page); got != "" {
			t.Errorf("parseVPDWWN(%x) = %q, want nothing from a malformed page", page, got)
		}
	}
	if got := parseVPDSerial([]byte{0, 0x80, 0xff, 0xff, 'A', 'B'}); got != "AB" {
		t.Errorf("a page shorter than its stated length: serial %q, want AB", got)
	}
}

func TestSysfsSystem(t *testing.T) {
	c := newCollector(Options{sysRoot: fakeSysfs(t)})
	fill, err := c.system(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var inv shared.Inventory
	fill(&inv)
	want := shared.System{Vendor: "Supermicro", Product: "SYS-1029P-WTR", Serial: "S123456X9",
		UUID: "4c4c4544-0042-3510-8051-b7c04f4e3132", Firmware: "uefi", BIOS: "3.4", Hostname: inv.System.Hostname}
	if inv.System != want {
		t.Errorf("system = %+v\nwant     %+v", inv.System, want)
	}
}

func TestSysfsSystemWithoutDMI(t *testing.T) {
	root := t.TempDir() // no DMI table and no EFI: a VM booted straight into a kernel
	fill, err := newCollector(Options{sysRoot: root}).system(context.Background())
	if err != nil {
		t.Fatalf("a machine without DMI is not an error: %v", err)
	}
	var inv shared.Inventory
	fill(&inv)
	if inv.System.Firmware != "bios" || inv.System.UUID != "" || inv.System.Vendor != "" {
		t.Errorf("system = %+v, want bios firmware and no DMI fields", inv.System)
	}
}

func TestSysfsMemory(t *testing.T) {
	c := newCollector(Options{sysRoot: fakeSysfs(t)})
	fill, err := c.memory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var inv shared.Inventory
	fill(&inv)
	if inv.Memory.TotalBytes != 4*128<<20 {
		t.Errorf("total = %d, want 4 blocks of 128 MiB", inv.Memory.TotalBytes)
	}
	want := []shared.DIMM{
		{Locator: "DIMM_A1", SizeBytes: 16 << 30, Type: "DDR4", Vendor: "Samsung"},
		{Locator: "DIMM_B1", SizeBytes: 32 << 30, Type: "DDR5", Vendor: "Micron"}, // extended size field
		{Locator: "DIMM_C1", SizeBytes: 16 << 20, Type: "DDR3", Vendor: "Hynix"},  // size given in KiB
	} // DIMM_A2 is an empty slot
	if !slices.Equal(inv.Memory.DIMMs, want) {
		t.Errorf("dimms = %+v\nwant %+v", inv.Memory.DIMMs, want)
	}
}

func TestParseMemoryDeviceRejectsGarbage(t *testing.T) {
	for _, raw := range [][]byte{nil, {17}, {17, 0xff, 0, 0}, make([]byte, 0x15), append([]byte{17, 0x15}, make([]byte, 0x13)...)} {
		if d, ok := parseMemoryDevice(raw); ok {
			t.Errorf("parseMemoryDevice(%x) = %+v, want not ok", raw, d)
		}
	}
	// A string index past the string set must not panic and gives no name.
	raw := make([]byte, 0x28)
	raw[0], raw[1], raw[0x0c], raw[0x0d], raw[0x10], raw[0x17] = 17, 0x28, 0x00, 0x04, 9, 9
	d, ok := parseMemoryDevice(append(raw, 'x', 0, 0))
	if !ok || d.Locator != "" || d.Vendor != "" || d.SizeBytes != 1<<30 {
		t.Errorf("dimm with bad string indexes = %+v, %v; want 1 GiB, no names", d, ok)
	}
}

func TestSysfsNICs(t *testing.T) {
	c := newCollector(Options{sysRoot: fakeSysfs(t)})
	fill, _ := c.nics(context.Background()) // the fake names have no addresses: nothing to check there
	var inv shared.Inventory
	fill(&inv)
	for i := range inv.NICs {
		inv.NICs[i].Addrs = nil
	}
	want := []shared.NIC{
		{Name: "br0", MAC: "0a:00:00:00:00:01", Virtual: true},
		{Name: "eno1", MAC: "3c:ec:ef:00:00:01", Driver: "e1000e", PCIAddress: "0000:00:1f.6", Link: true, SpeedMbps: 1000},
		// virtio: the PCI device sits one level above the NIC's device
		{Name: "eth0", MAC: "52:54:00:12:34:56", Driver: "virtio_net", PCIAddress: "0000:00:03.0", Link: true},
		// USB: no PCI address, the controller's would name every USB NIC at once
		{Name: "enx001122334455", MAC: "00:11:22:33:44:55"},
		// lo is left out: loopback is no network card
		{Name: "sit0", Virtual: true}, // a 4-byte link address is no MAC
	}
	slices.SortFunc(want, func(a, b shared.NIC) int { return strings.Compare(a.Name, b.Name) })
	if len(inv.NICs) != len(want) {
		t.Fatalf("nics = %+v\nwant %+v", inv.NICs, want)
	}
	for i := range want {
		if !nicEqual(inv.NICs[i], want[i]) {
			t.Errorf("nic %d = %+v\nwant   %+v", i, inv.NICs[i], want[i])
		}
	}
	if err := inv.Validate(); err != nil {
		t.Errorf("the NICs do not validate on the wire: %v", err)
	}
}

func nicEqual(a, b shared.NIC) bool {
	return a.Name == b.Name && a.MAC == b.MAC && a.Driver == b.Driver && a.PCIAddress == b.PCIAddress &&
		a.Vendor == b.Vendor && a.Product == b.Product &&
		a.Link == b.Link && a.SpeedMbps == b.SpeedMbps && a.Virtual == b.Virtual && slices.Equal(a.Addrs, b.Addrs)
}

// TestNICsAreNamedFromPCIIDs: a collection names each PCI NIC by its device's vendor and
// product, as the PCI section read them from pci.ids.
func TestNICsAreNamedFromPCIIDs(t *testing.T) {
	c := newCollector(Options{sysRoot: fakeSysfs(t), PCIIDsPath: "testdata/pci.ids"})
	inv := c.run(context.Background(), []section{{shared.SectionNICs, c.nics}, {shared.SectionPCI, c.pci}})
	byName := map[string]shared.NIC{}
	for _, n := range inv.NICs {
		byName[n.Name] = n
	}
	if n := byName["eno1"]; n.Vendor != "Intel Corporation" || n.Product != "Ethernet Connection (2) I219-V" {
		t.Errorf("eno1 (8086:15b8) named %q %q, want Intel Corporation's Ethernet Connection (2) I219-V", n.Vendor, n.Product)
	}
	if n := byName["enx001122334455"]; n.Vendor != "" || n.Product != "" {
		t.Errorf("a USB NIC was named after a PCI device: %+v", n)
	}
	if _, ok := byName["lo"]; ok {
		t.Error("loopback is listed as a NIC")
	}
}

func TestSysfsPCI(t *testing.T) {
	c := newCollector(Options{sysRoot: fakeSysfs(t), PCIIDsPath: "testdata/pci.ids"})
	fill, err := c.pci(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var inv shared.Inventory
	fill(&inv)
	want := []shared.PCIDevice{
		{Address: "0000:00:00.0", VendorID: "8086", ProductID: "2020", Vendor: "Intel Corporation",
			Product: "Sky Lake-E DMI3 Registers", Class: "Host bridge"},
		{Address: "0000:00:03.0", VendorID: "1af4", ProductID: "1041", Class: "Ethernet controller", Driver: "virtio-pci"},
		{Address: "0000:00:14.0", VendorID: "8086", ProductID: "a36d", Vendor: "Intel Corporation", Class: "0c0330", Driver: "xhci_hcd"},
		{Address: "0000:00:1f.6", VendorID: "8086", ProductID: "15b8", Vendor: "Intel Corporation",
			Product: "Ethernet Connection (2) I219-V", Class: "Ethernet controller", Driver: "e1000e"},
		{Address: "0000:3b:00.0", VendorID: "15b3", ProductID: "1017", Vendor: "Mellanox Technologies",
			Product: "MT27800 Family [ConnectX-5]", Class: "Ethernet controller", Driver: "mlx5_core"},
		{Address: "0000:5e:00.0", VendorID: "abcd", ProductID: "0001", Class: "Unassigned class"},
	}
	if !slices.Equal(inv.PCI, want) {
		t.Errorf("pci =\n%+v\nwant\n%+v", inv.PCI, want)
	}
}

func TestSysfsPCIWithoutIDsKeepsDevices(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "pci.ids")
	c := newCollector(Options{sysRoot: fakeSysfs(t), PCIIDsPath: missing})
	fill, err := c.pci(context.Background())
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("err = %v, want one naming %s", err, missing)
	}
	var inv shared.Inventory
	fill(&inv)
	if len(inv.PCI) != 6 || inv.PCI[3].VendorID != "8086" || inv.PCI[3].Vendor != "" || inv.PCI[3].Class != "020000" {
		t.Errorf("pci without names = %+v, want 6 devices listed by id and class code", inv.PCI)
	}
}
