package shared

import (
	"bytes"
	"fmt"
	"net"
	"strings"

	"sigs.k8s.io/yaml"
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
	// BMC is how Rivet powers the machine; without one it cannot (power in the lab's
	// VMs, a host adopted in service mode).
	BMC *BMC `json:"bmc,omitempty"`
	// MachineID is set by the coordinator once a registration matched the row; a second
	// machine claiming the same row is an identity conflict, not a second admission.
	MachineID MachineID `json:"machine_id,omitempty"`
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

// Validate checks a row and puts its MACs in canonical form (lower case, colons).
func (e *ExpectedMachine) Validate() error {
	if len(e.MACs) == 0 && e.Serial == "" && e.UUID == "" {
		return fmt.Errorf("give at least one MAC, a serial or a UUID to match the machine by")
	}
	if e.UUID != "" {
		u := normalizeUUID(e.UUID)
		if u == "" || bogusUUID(u) {
			return fmt.Errorf("uuid %q: want a DMI system UUID that is not a firmware placeholder", e.UUID)
		}
		e.UUID = u
	}
	if len(e.MACs) > MaxExpectedMACs {
		return fmt.Errorf("at most %d MACs", MaxExpectedMACs)
	}
	for i, m := range e.MACs {
		hw, err := net.ParseMAC(m)
		if err != nil || len(hw) != 6 {
			return fmt.Errorf("mac %q: want six bytes such as 52:54:00:12:34:56", m)
		}
		e.MACs[i] = hw.String()
	}
	if len(e.Serial) > 128 || strings.ContainsAny(e.Serial, "\x00\n\r\t") {
		return fmt.Errorf("serial: at most 128 printable bytes")
	}
	if e.Serial != "" && bogusSerial(e.Serial) {
		return fmt.Errorf("serial %q is a vendor placeholder that many machines share: match by MAC", e.Serial)
	}
	if e.Hostname != "" {
		if err := ValidateName("hostname", e.Hostname); err != nil {
			return err
		}
	}
	if err := ValidateLabels(e.Labels); err != nil {
		return err
	}
	if e.BMC != nil {
		if err := e.BMC.Validate(); err != nil {
			return err
		}
	}
	if e.MachineID != "" {
		return fmt.Errorf("machine_id is set by the coordinator, not in an import")
	}
	return nil
}

// MaxExpectedMACs bounds the MACs of one expected machine.
const MaxExpectedMACs = 16

// MaxExpectedPerImport bounds one import (one Raft write).
const MaxExpectedPerImport = 20000

// ImportRequest imports expected machines: all rows or none.
type ImportRequest struct {
	Machines []ExpectedMachine `json:"machines"`
}

// Validate checks every row and that no key, MAC or serial appears twice; the error names
// every bad row by its position (1-based) so the operator can fix the file in one go.
func (r *ImportRequest) Validate() error {
	if len(r.Machines) == 0 {
		return fmt.Errorf("the import has no machines")
	}
	if len(r.Machines) > MaxExpectedPerImport {
		return fmt.Errorf("at most %d machines per import", MaxExpectedPerImport)
	}
	var problems []string
	seen := map[string]int{}
	claim := func(row int, what, v string) {
		if first, dup := seen[what+v]; dup {
			problems = append(problems, fmt.Sprintf("row %d: %s %s is also in row %d", row, what, v, first))
			return
		}
		seen[what+v] = row
	}
	for i := range r.Machines {
		e := &r.Machines[i]
		if err := e.Validate(); err != nil {
			problems = append(problems, fmt.Sprintf("row %d: %v", i+1, err))
			continue
		}
		claim(i+1, "name", e.Key())
		for _, m := range e.MACs {
			claim(i+1, "mac", m)
		}
		if e.Serial != "" {
			claim(i+1, "serial", e.Serial)
		}
		if e.UUID != "" {
			claim(i+1, "uuid", e.UUID)
		}
	}
	if len(problems) > 0 {
		const show = 20
		more := ""
		if len(problems) > show {
			more = fmt.Sprintf("; and %d more", len(problems)-show)
			problems = problems[:show]
		}
		return fmt.Errorf("%d bad rows, nothing imported: %s%s", len(problems), strings.Join(problems, "; "), more)
	}
	return nil
}

// ImportResponse says what an import did.
type ImportResponse struct {
	Message string `json:"message"`
}

// ParseImport reads an expected-machines file: YAML or JSON, {"machines": [...]} or a
// bare list of rows. Unknown fields are errors; every bad row is named (see Validate).
func ParseImport(data []byte) (*ImportRequest, error) {
	if len(data) > MaxBody {
		return nil, fmt.Errorf("import file is larger than %d bytes", MaxBody)
	}
	js := bytes.TrimSpace(data)
	if len(js) == 0 || (js[0] != '{' && js[0] != '[') {
		var err error
		if js, err = yaml.YAMLToJSON(data); err != nil {
			return nil, fmt.Errorf("malformed YAML: %w", err)
		}
		js = bytes.TrimSpace(js)
	}
	if len(js) > 0 && js[0] == '[' {
		js = append(append([]byte(`{"machines":`), js...), '}')
	}
	var req ImportRequest
	if err := strictUnmarshal(js, &req); err != nil {
		return nil, fmt.Errorf("malformed import file: %w", err)
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return &req, nil
}
