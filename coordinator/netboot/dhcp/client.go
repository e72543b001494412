package dhcp

import (
	"bytes"
	"encoding/binary"
	"net"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Arch is the firmware class of a network-booting client, from DHCP option 93 (RFC 4578).
type Arch int

// The firmware classes Rivet tells apart. The string forms are the metric labels.
const (
	ArchNone     Arch = iota // not a PXE client: no option 93
	ArchBIOS                 // 0: x86 BIOS
	ArchEFIx64               // 7 or 9: x86-64 UEFI (9 is "EFI BC", sent by many x86-64 firmwares); 16: its HTTP boot
	ArchEFIArm64             // 11: arm64 UEFI; 19: its HTTP boot
	ArchOther                // any other value: answered only if the client is already iPXE
	numArchs
)

var archNames = [numArchs]string{"none", "bios", "efi-x64", "efi-arm64", "other"}

func (a Arch) String() string {
	if a < 0 || a >= numArchs {
		return "other"
	}
	return archNames[a]
}

// Archs lists every Arch, for setting up metric labels ahead of time.
func Archs() []Arch { return []Arch{ArchNone, ArchBIOS, ArchEFIx64, ArchEFIArm64, ArchOther} }

// client is what the server learned about the sender of one request.
type client struct {
	mac  net.HardwareAddr
	pxe  bool // option 60 begins with "PXEClient"
	http bool // option 60 begins with "HTTPClient": UEFI HTTP boot, which wants a URL
	ipxe bool // user class "iPXE" (or iPXE's own option 175): already running iPXE
	arch Arch
}

// classify reads the options that decide how a client boots. It never fails: odd
// options make a client less bootable, never a reason to crash.
func classify(req *dhcpv4.DHCPv4) client {
	c := client{mac: req.ClientHWAddr}
	class := string(req.Options.Get(dhcpv4.OptionClassIdentifier))
	c.pxe = strings.HasPrefix(class, "PXEClient")
	c.http = strings.HasPrefix(class, "HTTPClient")
	c.arch = archOf(req.Options.Get(dhcpv4.OptionClientSystemArchitectureType))
	c.ipxe = isIPXE(req)
	return c
}

func archOf(opt []byte) Arch {
	if len(opt) < 2 {
		return ArchNone
	}
	// A client may list several architectures; the first is the one it runs now.
	switch binary.BigEndian.Uint16(opt) {
	case 0:
		return ArchBIOS
	case 7, 9, 16:
		return ArchEFIx64
	case 11, 19:
		return ArchEFIArm64
	}
	return ArchOther
}

// isIPXE reports whether the client is iPXE. iPXE sends user class "iPXE" as raw bytes
// (not in RFC 3004 form) and always sends its encapsulated option 175.
func isIPXE(req *dhcpv4.DHCPv4) bool {
	uc := req.Options.Get(dhcpv4.OptionUserClassInformation)
	if bytes.Equal(uc, []byte("iPXE")) {
		return true
	}
	for _, class := range req.UserClass() {
		if class == "iPXE" {
			return true
		}
	}
	return req.Options.Has(optIPXEEncap)
}

// Option codes the library has no names for.
const (
	optIPXEEncap        = dhcpv4.GenericOptionCode(175) // iPXE's encapsulated options
	optIPXENoPXEDHCP    = 176                           // inside 175: skip the ProxyDHCP wait
	pxeDiscoveryControl = 6                             // inside 43: PXE_DISCOVERY_CONTROL
)

// pxeVendorOptions is option 43 for a native BIOS PXE ROM: discovery control bit 3
// ("a boot file name is in the offer: download it, no boot server discovery, no menu").
// UEFI clients do not get it: several UEFI firmwares ignore a proxy offer that tries to
// skip discovery, while all of them accept an offer without option 43 and then ask for
// the file on port 4011 (the "BINL" flow of EDK2's PxeBcDxe).
var pxeVendorOptions = []byte{pxeDiscoveryControl, 1, 8, 0xff}

// ipxeNoProxyWait is option 175 with 176 ("no-pxedhcp") = 1: iPXE then takes the first
// address offer at once instead of waiting ~3 s for ProxyDHCP offers.
var ipxeNoProxyWait = []byte{optIPXENoPXEDHCP, 1, 1}

// BootFiles names the iPXE binaries, by client firmware, that native PXE clients fetch
// over TFTP. iPXE itself is then sent to the HTTP script instead.
type BootFiles struct {
	BIOS     string // arch 0; default undionly.kpxe (uses the ROM's UNDI driver)
	EFIx64   string // arch 7 and 9; default snponly.efi (ipxe.efi carries its own NIC drivers)
	EFIArm64 string // arch 11; default snponly-arm64.efi (Debian ships no arm64 iPXE)
}

func (f BootFiles) withDefaults() BootFiles {
	if f.BIOS == "" {
		f.BIOS = "undionly.kpxe"
	}
	if f.EFIx64 == "" {
		f.EFIx64 = "snponly.efi"
	}
	if f.EFIArm64 == "" {
		f.EFIArm64 = "snponly-arm64.efi"
	}
	return f
}

// forArch returns the iPXE binary for a firmware, or "" if Rivet has none for it.
// Names are the iPXE binaries, defaults filled in: the only files TFTP serves.
func (f BootFiles) Names() []string {
	f = f.withDefaults()
	return []string{f.BIOS, f.EFIx64, f.EFIArm64}
}

func (f BootFiles) forArch(a Arch) string {
	switch a {
	case ArchBIOS:
		return f.BIOS
	case ArchEFIx64:
		return f.EFIx64
	case ArchEFIArm64:
		return f.EFIArm64
	}
	return ""
}
