package shared

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// ExpectedMachine is one row of the operator's list of machines that should appear: the
// operator's intent, which admits a machine when it registers. A machine matches a row by
// any of its physical NICs' MACs, its DMI serial or its DMI system UUID (the one key a
// host adopted in service mode may have, when its NICs are virtual); it then takes the
// row's labels (the operator's, which role selectors and placement read) and host name.
type ExpectedMachine struct {
	MACs     []string          `json:"macs,omitempty"`
	Serial   string            `json:"serial,omitempty"`
	UUID     string            `json:"uuid,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Address is the machine's static address with its prefix length (10.0.4.21/24), if
	// the operator gives one: validated and stored, shown with the machine.
	Address string `json:"address,omitempty"`
	// BMC is how Rivet powers the machine; without one it cannot (power in the lab's
	// VMs, a host adopted in service mode).
	BMC *BMC `json:"bmc,omitempty"`
	// MachineID is set by the coordinator once a registration matched the row; a second
	// machine claiming the same row is an identity conflict, not a second admission.
	MachineID MachineID `json:"machine_id,omitempty"`
	// Power is the coordinator's power record of a row no machine has matched yet (the
	// power-on that should bring it, the recovery's cycles); an import never sets it.
	Power PowerInfo `json:"power,omitzero"`
}

// Key names the row: its host name, else its first MAC, else its serial.
func (e *ExpectedMachine) Key() string {
	switch {
	case e.Hostname != "":
		return e.Hostname
	case len(e.MACs) > 0:
		return e.MACs[0]
	case e.Serial != "":
		return "serial:" + e.Serial
	}
	return "uuid:" + e.UUID
}

// MatchKeys are the keys a machine is matched to rows by: "mac", "serial:S", "uuid:U".
func (e *ExpectedMachine) MatchKeys() []string {
	keys := append([]string(nil), e.MACs...)
	if e.Serial != "" {
		keys = append(keys, "serial:"+e.Serial)
	}
	if e.UUID != "" {
		keys = append(keys, "uuid:"+e.UUID)
	}
	return keys
}

// ExpectedKeys are the keys a registered machine may be matched to rows by. What a
// machine reports of itself is only its word, so a registration made with nothing but a
// boot ticket (bootMAC set: anyone on the boot network can get one for its own MAC) is
// matched by the MAC the ticket vouched for and by its serial, never by its other MACs
// or its UUID: PXE firmware broadcasts the UUID (DHCP option 97), so anyone could claim
// a UUID-only row. A registration made with an operator's enrolment token or the
// machine's own token is matched by everything it reports.
func ExpectedKeys(m *Machine) []string {
	var keys []string
	if m.BootMAC != "" {
		keys = append(keys, m.BootMAC)
	} else {
		keys = append(keys, m.MACs...)
	}
	if m.Inventory == nil {
		return keys
	}
	if s := strings.TrimSpace(m.Inventory.System.Serial); s != "" && !bogusSerial(s) {
		keys = append(keys, "serial:"+s)
	}
	if u := normalizeUUID(m.Inventory.System.UUID); u != "" && !bogusUUID(u) && m.BootMAC == "" {
		keys = append(keys, "uuid:"+u)
	}
	return keys
}

// FieldError is a bad value in one field of an import row. Field is the row's JSON/YAML
// name ("macs", "bmc.address", "labels.rack"); a CSV file names its column instead.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErrorf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// FieldOf is the field an error names, or "".
func FieldOf(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

// Validate checks a row and puts its MACs, UUID and address in canonical form. An error
// is a *FieldError naming the bad field.
func (e *ExpectedMachine) Validate() error {
	if len(e.Labels) == 0 {
		e.Labels = nil // as the row reads back from its JSON
	}
	if len(e.MACs) == 0 {
		e.MACs = nil
	}
	if len(e.MACs) == 0 && e.Serial == "" && e.UUID == "" {
		return fieldErrorf("macs", "give at least one MAC, a serial or a UUID to match the machine by")
	}
	if e.UUID != "" {
		u := normalizeUUID(e.UUID)
		if u == "" || bogusUUID(u) {
			return fieldErrorf("uuid", "uuid %q: want a DMI system UUID that is not a firmware placeholder", e.UUID)
		}
		e.UUID = u
	}
	if len(e.MACs) > MaxExpectedMACs {
		return fieldErrorf("macs", "at most %d MACs", MaxExpectedMACs)
	}
	for i, m := range e.MACs {
		hw, err := net.ParseMAC(m)
		if err != nil || len(hw) != 6 {
			return fieldErrorf("macs", "mac %q: want six bytes such as 52:54:00:12:34:56", m)
		}
		e.MACs[i] = hw.String()
	}
	if len(e.Serial) > 128 || strings.ContainsAny(e.Serial, "\x00\n\r\t") {
		return fieldErrorf("serial", "serial: at most 128 printable bytes")
	}
	if e.Serial != "" && bogusSerial(e.Serial) {
		return fieldErrorf("serial", "serial %q is a vendor placeholder that many machines share: match by MAC", e.Serial)
	}
	if e.Hostname != "" {
		if err := ValidateName("hostname", e.Hostname); err != nil {
			return &FieldError{Field: "hostname", Err: err}
		}
	}
	if len(e.Labels) > MaxLabels {
		return fieldErrorf("labels", "at most %d labels", MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(e.Labels)) {
		if err := ValidateLabel(k, e.Labels[k]); err != nil {
			return &FieldError{Field: "labels." + k, Err: err}
		}
	}
	if e.Address != "" {
		a, err := canonicalAddress(e.Address)
		if err != nil {
			return &FieldError{Field: "address", Err: err}
		}
		e.Address = a
	}
	if e.BMC != nil {
		if err := e.BMC.Validate(); err != nil {
			return &FieldError{Field: "bmc." + FieldOf(err), Err: err}
		}
	}
	if e.MachineID != "" {
		return fieldErrorf("machine_id", "machine_id is set by the coordinator, not in an import")
	}
	return nil
}

// canonicalAddress checks a static address: a unicast host address with its prefix
// length, not the network's or (IPv4) its broadcast address.
func canonicalAddress(s string) (string, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("address %q: want the host's address with its prefix length, such as 10.0.4.21/24", s)
	}
	a := p.Addr()
	bits := a.BitLen()
	switch {
	case p.Bits() == 0 || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.Zone() != "":
		return "", fmt.Errorf("address %q: want a unicast host address", s)
	case bits-p.Bits() >= 2 && a == p.Masked().Addr():
		return "", fmt.Errorf("address %q is the network's address, not a host's", s)
	case a.Is4() && bits-p.Bits() >= 2 && a == lastAddr(p):
		return "", fmt.Errorf("address %q is the network's broadcast address, not a host's", s)
	}
	return p.String(), nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// MaxExpectedMACs bounds the MACs of one expected machine.
const MaxExpectedMACs = 16

// MaxExpectedPerImport bounds one import (one Raft write).
const MaxExpectedPerImport = 20000

// ImportRequest imports expected machines: all rows or none.
type ImportRequest struct {
	Machines []ExpectedMachine `json:"machines"`
}

// RowError is one bad row of an import: its line in the file (0 when the rows came
// without a file, as over the API), its position, the field and what is wrong.
type RowError struct {
	Line    int    `json:"line,omitempty"`
	Row     int    `json:"row,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func (e RowError) Error() string {
	var b strings.Builder
	switch {
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d", e.Line)
	case e.Row > 0:
		fmt.Fprintf(&b, "row %d", e.Row)
	default:
		b.WriteString("file")
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ", field %s", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Message)
	return b.String()
}

// ImportErrors are every bad row of an import; nothing is imported.
type ImportErrors []RowError

// maxShownRowErrors bounds the rows an error message lists.
const maxShownRowErrors = 50

func (es ImportErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d bad rows, nothing imported:", len(es))
	for i, e := range es {
		if i == maxShownRowErrors {
			fmt.Fprintf(&b, "\n  and %d more", len(es)-i)
			break
		}
		b.WriteString("\n  ")
		b.WriteString(e.Error())
	}
	return b.String()
}

// rowClaims finds rows that claim the same key, MAC, serial or UUID as an earlier one.
type rowClaims map[string]int

// claim records the row's keys; where is how a problem names the earlier row.
func (c rowClaims) claim(e *ExpectedMachine, pos int, where func(int) string, add func(field, msg string)) {
	one := func(field, what, v string) {
		if first, dup := c[what+" "+v]; dup {
			add(field, fmt.Sprintf("%s %s is also on %s", what, v, where(first)))
			return
		}
		c[what+" "+v] = pos
	}
	one(keyField(e), "name", e.Key())
	for _, m := range e.MACs {
		one("macs", "mac", m)
	}
	if e.Serial != "" {
		one("serial", "serial", e.Serial)
	}
	if e.UUID != "" {
		one("uuid", "uuid", e.UUID)
	}
}

// keyField is the field a row's key comes from.
func keyField(e *ExpectedMachine) string {
	switch {
	case e.Hostname != "":
		return "hostname"
	case len(e.MACs) > 0:
		return "macs"
	case e.Serial != "":
		return "serial"
	}
	return "uuid"
}

// Validate checks every row and that no key, MAC or serial appears twice; the error
// (ImportErrors) names every bad row by its position (1-based), with its field, so the
// operator can fix the file in one go.
func (r *ImportRequest) Validate() error {
	if len(r.Machines) == 0 {
		return fmt.Errorf("the import has no machines")
	}
	if len(r.Machines) > MaxExpectedPerImport {
		return fmt.Errorf("at most %d machines per import", MaxExpectedPerImport)
	}
	var problems ImportErrors
	claims := rowClaims{}
	for i := range r.Machines {
		e := &r.Machines[i]
		if err := e.Validate(); err != nil {
			problems = append(problems, RowError{Row: i + 1, Field: FieldOf(err), Message: err.Error()})
			continue
		}
		claims.claim(e, i+1, func(n int) string { return fmt.Sprintf("row %d", n) }, func(field, msg string) {
			problems = append(problems, RowError{Row: i + 1, Field: field, Message: msg})
		})
	}
	if len(problems) > 0 {
		return problems
	}
	return nil
}

// ImportResponse says what an import did.
type ImportResponse struct {
	Message string `json:"message"`
}

// ParseImport reads an expected-machines file without BMC password references (see
// ParseImportFile for files that have them): CSV, YAML or JSON, {"machines": [...]} or a
// bare list of rows. Every bad row is named with its line and field (ImportErrors).
func ParseImport(data []byte) (*ImportRequest, error) {
	f, err := ParseImportFile("", data)
	if err != nil {
		return nil, err
	}
	return f.Check(nil)
}
