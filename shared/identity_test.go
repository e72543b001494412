package shared

import (
	"strings"
	"testing"
)

func TestDeriveMachineID(t *testing.T) {
	nic := func(name, mac, pci string) NIC { return NIC{Name: name, MAC: mac, PCIAddress: pci} }
	board := func(uuid, serial string, nics ...NIC) *Inventory {
		return &Inventory{System: System{Vendor: "Supermicro", Product: "X11", UUID: uuid, Serial: serial}, NICs: nics}
	}
	onboard := []NIC{nic("eno1", "3c:ec:ef:00:00:01", "0000:00:1f.6"), nic("eno2", "3c:ec:ef:00:00:02", "0000:00:1f.7")}
	const realUUID = "4c4c4544-0042-3510-8051-b7c04f4e3132"

	tests := []struct {
		name  string
		inv   *Inventory
		basis string
		same  *Inventory // when set, must derive the same id
		other *Inventory // when set, must derive a different id
	}{
		{name: "valid uuid", inv: board(realUUID, "S1", onboard...), basis: "uuid",
			same: board(strings.ToUpper(realUUID), "S2"), other: board("5c4c4544-0042-3510-8051-b7c04f4e3132", "S1")},
		{name: "all-zero uuid falls to serial", inv: board("00000000-0000-0000-0000-000000000000", "S123", onboard...),
			basis: "serial", same: board("", "S123")},
		{name: "all-F uuid falls to serial", inv: board("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "S123"), basis: "serial"},
		{name: "AMI template uuid falls to serial", inv: board("03000200-0400-0500-0006-000700080009", "S123"), basis: "serial"},
		{name: "malformed uuid falls to serial", inv: board("not-a-uuid", "S123"), basis: "serial"},
		{name: "serial is scoped by vendor and product", inv: board("", "S123"), basis: "serial",
			other: &Inventory{System: System{Vendor: "Dell", Product: "R640", Serial: "S123"}}},
		{name: "OEM placeholder serial falls to MAC", inv: board("", "To be filled by O.E.M.", onboard...), basis: "mac",
			same: board("", "", onboard...)},
		{name: "default string serial falls to MAC", inv: board("", "Default string", onboard...), basis: "mac"},
		{name: "zeros serial falls to MAC", inv: board("", "0000000000", onboard...), basis: "mac"},
		{name: "MAC of lowest PCI address", inv: board("", "", onboard[1], onboard[0]), basis: "mac",
			same: board("", "", onboard[0]), other: board("", "", onboard[1])},
		{name: "a NIC with a lower MAC in a later slot keeps the id",
			inv: board("", "", onboard...), basis: "mac",
			same: board("", "", append([]NIC{nic("ens5f0", "00:00:5e:00:00:01", "0000:5e:00.0")}, onboard...)...)},
		{name: "NICs without PCI address come after", inv: board("", "", nic("usb0", "00:00:00:00:00:09", ""), onboard[1]),
			basis: "mac", same: board("", "", onboard[1])},
		{name: "virtual NICs do not count", inv: board("", "", NIC{Name: "br0", MAC: "00:00:00:00:00:01", Virtual: true}, onboard[0]),
			basis: "mac", same: board("", "", onboard[0])},
		{name: "MAC case does not matter", inv: board("", "", nic("eth0", "AA:BB:CC:00:00:01", "0000:00:03.0")),
			basis: "mac", same: board("", "", nic("eth0", "aa:bb:cc:00:00:01", "0000:00:03.0"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := DeriveMachineID(tt.inv)
			if err != nil {
				t.Fatal(err)
			}
			if id.Basis != tt.basis {
				t.Errorf("basis = %s, want %s", id.Basis, tt.basis)
			}
			if err := id.ID.Validate(); err != nil {
				t.Error(err)
			}
			if tt.same != nil {
				if other, err := DeriveMachineID(tt.same); err != nil || other.ID != id.ID {
					t.Errorf("equivalent facts gave %v (%v), want %v", other.ID, err, id.ID)
				}
			}
			if tt.other != nil {
				if other, err := DeriveMachineID(tt.other); err != nil || other.ID == id.ID {
					t.Errorf("different facts gave the same id %v (%v)", other.ID, err)
				}
			}
		})
	}
}

func TestDeriveMachineIDWithoutFacts(t *testing.T) {
	for name, inv := range map[string]*Inventory{
		"nil":                 nil,
		"empty":               {},
		"bogus everything":    {System: System{UUID: "00000000-0000-0000-0000-000000000000", Serial: "N/A"}},
		"only virtual NICs":   {NICs: []NIC{{Name: "br0", MAC: "02:00:00:00:00:01", Virtual: true}}},
		"NIC without any MAC": {NICs: []NIC{{Name: "eth0", PCIAddress: "0000:00:03.0"}}},
	} {
		if id, err := DeriveMachineID(inv); err == nil {
			t.Errorf("%s: got id %+v, want an error", name, id)
		} else if inv != nil && !strings.Contains(err.Error(), "--system-uuid") {
			t.Errorf("%s: error %q does not say what to do", name, err)
		}
	}
}

func TestMachineIDValidate(t *testing.T) {
	for id, ok := range map[MachineID]bool{
		"m-0123456789abcdef": true, "m-0123456789ABCDEF": false, "m-0123": false,
		"0123456789abcdef": false, "m-0123456789abcdefg": false, "": false,
	} {
		if (id.Validate() == nil) != ok {
			t.Errorf("MachineID(%q).Validate() ok=%v, want %v", id, !ok, ok)
		}
	}
}
