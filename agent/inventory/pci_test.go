package inventory

import (
	"os"
	"testing"

	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestScanRealPCIIDs names devices from the pci.ids Debian ships, including one whose
// device id also exists under another vendor.
func TestScanRealPCIIDs(t *testing.T) {
	path := pciIDsPaths[0]
	testenv.RequireFile(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	devs := []shared.PCIDevice{
		{VendorID: "8086", ProductID: "100e", Class: "020000"},
		{VendorID: "1af4", ProductID: "1041", Class: "020000"},
		{VendorID: "10de", ProductID: "ffff", Class: "030000"}, // no such NVIDIA device
	}
	names := scanPCIIDs(data, devs)
	for key, want := range map[string]string{
		"8086": "Intel Corporation", "1af4": "Red Hat, Inc.", "10de": "NVIDIA Corporation",
	} {
		if got := names.vendors[key]; got != want {
			t.Errorf("vendor %s = %q, want %q", key, got, want)
		}
	}
	if got := names.products["8086100e"]; got != "82540EM Gigabit Ethernet Controller" {
		t.Errorf("8086:100e = %q", got)
	}
	if got := names.products["1af41041"]; got != "Virtio 1.0 network device" {
		t.Errorf("1af4:1041 = %q", got)
	}
	if got, ok := names.products["10deffff"]; ok {
		t.Errorf("an unknown device got a name: %q", got)
	}
	if got := names.className("020000"); got != "Ethernet controller" {
		t.Errorf("class 0200 = %q", got)
	}
	if got := names.className("030000"); got != "VGA compatible controller" {
		t.Errorf("class 0300 = %q", got)
	}
	if len(names.products) != 2 || len(names.vendors) != 3 {
		t.Errorf("kept more than asked for: %d products, %d vendors", len(names.products), len(names.vendors))
	}
}

func TestScanPCIIDsOddInput(t *testing.T) {
	devs := []shared.PCIDevice{{VendorID: "8086", ProductID: "1572", Class: "02"}}
	for _, data := range []string{"", "\n\n", "8086", "\t\t", "C 0", "8086  Intel\n\t15", "C 02  Net\n\t0"} {
		names := scanPCIIDs([]byte(data), devs) // must not panic
		if names.className("02") != "02" {
			t.Errorf("a 2-digit class code must stay as it is")
		}
	}
}

func BenchmarkScanPCIIDs(b *testing.B) {
	data, err := os.ReadFile(pciIDsPaths[0])
	if err != nil {
		b.Skip(err)
	}
	devs := []shared.PCIDevice{{VendorID: "8086", ProductID: "100e", Class: "020000"}}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		scanPCIIDs(data, devs)
	}
}
