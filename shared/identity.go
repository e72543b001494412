package shared

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"
)

// MachineID names a machine for its whole life. It is derived from hardware facts (see
// DeriveMachineID), so the same hardware always registers as the same machine.
type MachineID string

var machineIDPattern = regexp.MustCompile(`^m-[0-9a-f]{16}$`)

// Validate checks the textual form "m-" + 16 lowercase hex digits.
func (id MachineID) Validate() error {
	if !machineIDPattern.MatchString(string(id)) {
		return fmt.Errorf("machine id %q: want m- and 16 hex digits", string(id))
	}
	return nil
}

// Identity is the outcome of DeriveMachineID: the id and the fact it came from.
type Identity struct {
	ID    MachineID `json:"id"`
	Basis string    `json:"basis"` // "uuid", "serial" or "mac": which rule gave the id
}

// DeriveMachineID computes a machine's id from its inventory. The rule, first match wins:
//
//  1. The DMI system UUID, unless it is one of the bogus values many boards ship
//     (all zeros, all ones, the AMI "03000200-0400-0500-0006-000700080009" family, or a
//     UUID made of one repeated digit).
//  2. The DMI system vendor, product and serial together, unless the serial is a
//     placeholder such as "To be filled by O.E.M." or "Default string".
//  3. The MAC of the physical NIC with the lowest PCI address (on-board NICs come first on
//     the bus), so adding a NIC in a later slot does not change the id; NICs without a PCI
//     address sort after those with one, by MAC.
//
// The id is "m-" and the first 16 hex digits of the SHA-256 of the chosen fact. The
// coordinator derives it again from the registered inventory; an agent cannot pick its id.
func DeriveMachineID(inv *Inventory) (Identity, error) {
	if inv == nil {
		return Identity{}, fmt.Errorf("no inventory to derive a machine id from")
	}
	if u := normalizeUUID(inv.System.UUID); u != "" && !bogusUUID(u) {
		return identityOf("uuid", "uuid:"+u), nil
	}
	if s := strings.TrimSpace(inv.System.Serial); s != "" && !bogusSerial(s) {
		fact := "serial:" + strings.ToLower(strings.TrimSpace(inv.System.Vendor)+"/"+
			strings.TrimSpace(inv.System.Product)+"/"+s)
		return identityOf("serial", fact), nil
	}
	nics := inv.PhysicalNICs()
	if len(nics) == 0 {
		return Identity{}, fmt.Errorf("cannot derive a machine id: no valid DMI UUID, no valid " +
			"serial and no physical NIC; set the agent's --system-uuid to a unique value")
	}
	sort.Slice(nics, func(i, j int) bool {
		a, b := nics[i], nics[j]
		if (a.PCIAddress == "") != (b.PCIAddress == "") {
			return a.PCIAddress != ""
		}
		if a.PCIAddress != b.PCIAddress {
			return a.PCIAddress < b.PCIAddress
		}
		return strings.ToLower(a.MAC) < strings.ToLower(b.MAC)
	})
	mac, err := net.ParseMAC(nics[0].MAC)
	if err != nil {
		return Identity{}, fmt.Errorf("cannot derive a machine id: bad MAC %q", nics[0].MAC)
	}
	return identityOf("mac", "mac:"+mac.String()), nil
}

func identityOf(basis, fact string) Identity {
	sum := sha256.Sum256([]byte(fact))
	return Identity{ID: MachineID("m-" + hex.EncodeToString(sum[:8])), Basis: basis}
}

func normalizeUUID(u string) string {
	u = strings.ToLower(strings.TrimSpace(u))
	if len(u) != 36 || strings.Count(u, "-") != 4 {
		return ""
	}
	for _, r := range strings.ReplaceAll(u, "-", "") {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return ""
		}
	}
	return u
}

// bogusUUIDs are DMI UUIDs shipped by many boards at once (firmware templates never filled in).
var bogusUUIDs = map[string]bool{
	"03000200-0400-0500-0006-000700080009": true, // AMI template
	"00020003-0004-0005-0006-000700080009": true, // the same, byte-swapped
	"4c4c4544-0000-2010-8020-80c04f202020": true, // Dell template with no service tag
	"12345678-1234-5678-90ab-cddeefaabbcc": true, // documented example value
}

func bogusUUID(u string) bool {
	if bogusUUIDs[u] {
		return true
	}
	hexDigits := strings.ReplaceAll(u, "-", "")
	return strings.Count(hexDigits, hexDigits[:1]) == len(hexDigits) // one repeated digit: 0000…, ffff…
}

var bogusSerials = []string{
	"to be filled by o.e.m.", "default string", "system serial number", "not specified",
	"not applicable", "none", "n/a", "na", "chassis serial number", "0123456789",
	"123456789", "1234567890", "serial", "oem", "unknown", "invalid",
}

func bogusSerial(s string) bool {
	l := strings.ToLower(strings.TrimSpace(s))
	for _, b := range bogusSerials {
		if l == b {
			return true
		}
	}
	return strings.Trim(l, "0x. -") == "" || strings.Trim(l, "f") == ""
}
