package shared

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"gopkg.in/yaml.v3"
)

// The operator's import file, read with the line of every row so that each bad row is
// reported where the operator can find it. Two formats:
//
//   - CSV with a header row (packaging/config/expected.example.csv): columns mac (several
//     MACs separated by ';' or spaces), serial, uuid, hostname, address, bmc_driver,
//     bmc_address, bmc_user, bmc_password_file, bmc_password_env, bmc_tls_sha256, and
//     labels as one column per label (label.rack, label.pool) and/or a labels column of
//     k=v;k=v. Lines starting with # are comments; an empty cell is an unset field.
//   - YAML or JSON (packaging/config/expected.example.yaml): a list of rows, or
//     {machines: [...]}, each row an ExpectedMachine (bmc.password_file, bmc.password_env).
//
// ParseImportFile reads the rows; ImportFile.Check resolves the BMC password references
// (the CLI's job: a file or an environment variable of the operator) and validates every
// row, all of them, before anything is sent.

// Import file formats.
const (
	FormatCSV  = "csv"
	FormatYAML = "yaml" // YAML or JSON
)

// ImportFile is a parsed import file: its rows, each with its line.
type ImportFile struct {
	Format string
	Rows   []ImportRow
	// labelColumns: a CSV file's label.KEY columns, so an error names the column.
	labelColumns map[string]bool
}

// ImportRow is one row of the file and where it is.
type ImportRow struct {
	Line    int // the row's first line, 1-based
	Machine ExpectedMachine
	// lines are the lines of the row's fields (YAML: "bmc.user" → 7), where known.
	lines map[string]int
}

// maxImportErrors stops reading a file that is mostly not an import.
const maxImportErrors = 1000

// ParseImportFile reads an import file. name (may be empty) chooses the format by its
// extension (.csv; .yaml, .yml, .json); without one the content decides. A malformed
// file is an error; rows that do not decode are ImportErrors, one per row, each with
// its line and field.
func ParseImportFile(name string, data []byte) (*ImportFile, error) {
	if len(data) > MaxBody {
		return nil, fmt.Errorf("import file is larger than %d bytes", MaxBody)
	}
	if !looksCSV(name, data) {
		return parseImportYAML(data)
	}
	return parseImportCSV(data)
}

func looksCSV(name string, data []byte) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return true
	case ".yaml", ".yml", ".json":
		return false
	}
	for line := range bytes.Lines(data) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		// A CSV header is a list of column names: commas, no YAML punctuation.
		return bytes.IndexByte(line, ',') > 0 && !bytes.ContainsAny(line, ":{}[]-")
	}
	return false
}

// Check resolves each row's BMC password reference with resolve (nil: no row may have
// one) and validates every row and that no two claim the same name, MAC, serial or UUID.
// resolve fills b.Password and clears the reference; its error names the reference's
// field (FieldError: password_file or password_env). All rows are checked: the error is
// ImportErrors listing every bad one.
func (f *ImportFile) Check(resolve func(b *BMC) error) (*ImportRequest, error) {
	req := &ImportRequest{Machines: make([]ExpectedMachine, 0, len(f.Rows))}
	if len(f.Rows) == 0 {
		return nil, fmt.Errorf("the import has no machines")
	}
	if len(f.Rows) > MaxExpectedPerImport {
		return nil, fmt.Errorf("%d machines: at most %d per import", len(f.Rows), MaxExpectedPerImport)
	}
	var problems ImportErrors
	claims := rowClaims{}
	lineOf := func(n int) string { return fmt.Sprintf("line %d", f.Rows[n].Line) }
	for i := range f.Rows {
		row := &f.Rows[i]
		e := row.Machine
		if e.BMC != nil {
			b := *e.BMC
			e.BMC = &b
			if (b.PasswordFile != "" || b.PasswordEnv != "") && resolve != nil {
				if err := resolve(e.BMC); err != nil {
					problems = append(problems, f.rowError(row, i, "bmc."+FieldOf(err), err))
					continue
				}
			}
		}
		if err := e.Validate(); err != nil {
			problems = append(problems, f.rowError(row, i, FieldOf(err), err))
			continue
		}
		claims.claim(&e, i, lineOf, func(field, msg string) {
			problems = append(problems, f.rowError(row, i, field, errors.New(msg)))
		})
		req.Machines = append(req.Machines, e)
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return req, nil
}

// rowError names a row's field as the file does, on the field's own line where known.
func (f *ImportFile) rowError(row *ImportRow, i int, field string, err error) RowError {
	line := row.Line
	if l, ok := row.lines[field]; ok {
		line = l
	}
	return RowError{Line: line, Row: i + 1, Field: f.fieldName(field), Message: err.Error()}
}

// fieldName is how the file names a field: YAML and JSON by its key path, CSV by its column.
func (f *ImportFile) fieldName(field string) string {
	if f.Format != FormatCSV || field == "" {
		return field
	}
	switch {
	case field == "macs":
		return "mac"
	case strings.HasPrefix(field, "bmc."):
		return "bmc_" + strings.TrimPrefix(field, "bmc.")
	case strings.HasPrefix(field, "labels."):
		if k := strings.TrimPrefix(field, "labels."); f.labelColumns[k] {
			return "label." + k
		}
		return "labels"
	}
	return field
}

// csvColumns are a CSV file's columns, each setting one field of the row.
var csvColumns = map[string]func(e *ExpectedMachine, v string) error{
	"mac": func(e *ExpectedMachine, v string) error {
		e.MACs = strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ' ' || r == '\t' })
		return nil
	},
	"serial":   func(e *ExpectedMachine, v string) error { e.Serial = v; return nil },
	"uuid":     func(e *ExpectedMachine, v string) error { e.UUID = v; return nil },
	"hostname": func(e *ExpectedMachine, v string) error { e.Hostname = v; return nil },
	"address":  func(e *ExpectedMachine, v string) error { e.Address = v; return nil },
	"labels": func(e *ExpectedMachine, v string) error {
		for _, kv := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ' ' }) {
			k, val, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return fmt.Errorf("labels: %q is not key=value (write k=v;k=v)", kv)
			}
			if _, dup := e.Labels[k]; dup {
				return fmt.Errorf("labels: %s is given twice", k)
			}
			setLabel(e, k, val)
		}
		return nil
	},
	"bmc_driver":        bmcColumn(func(b *BMC, v string) { b.Driver = BMCDriver(v) }),
	"bmc_address":       bmcColumn(func(b *BMC, v string) { b.Address = v }),
	"bmc_user":          bmcColumn(func(b *BMC, v string) { b.User = v }),
	"bmc_password_file": bmcColumn(func(b *BMC, v string) { b.PasswordFile = v }),
	"bmc_password_env":  bmcColumn(func(b *BMC, v string) { b.PasswordEnv = v }),
	"bmc_tls_sha256":    bmcColumn(func(b *BMC, v string) { b.TLSSHA256 = v }),
}

// CSVColumns lists the columns a CSV import file may have (besides label.KEY).
func CSVColumns() []string {
	cols := make([]string, 0, len(csvColumns))
	for c := range csvColumns {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	return cols
}

func bmcColumn(set func(b *BMC, v string)) func(e *ExpectedMachine, v string) error {
	return func(e *ExpectedMachine, v string) error {
		if e.BMC == nil {
			e.BMC = &BMC{}
		}
		set(e.BMC, v)
		return nil
	}
}

func setLabel(e *ExpectedMachine, k, v string) {
	if e.Labels == nil {
		e.Labels = map[string]string{}
	}
	e.Labels[k] = v
}

func parseImportCSV(data []byte) (*ImportFile, error) {
	f := &ImportFile{Format: FormatCSV, labelColumns: map[string]bool{}}
	r := csv.NewReader(bytes.NewReader(data))
	r.Comment = '#'
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("the CSV file has no header row (columns: %s, label.KEY)", strings.Join(CSVColumns(), ", "))
		}
		return nil, fmt.Errorf("CSV header: %w", err)
	}
	headerLine, _ := r.FieldPos(0)
	type column struct {
		name  string
		label string // label.KEY: the label's key
		set   func(e *ExpectedMachine, v string) error
	}
	cols := make([]column, len(header))
	var problems ImportErrors
	seen := map[string]bool{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if name == "macs" {
			name = "mac"
		}
		bad := func(msg string) {
			problems = append(problems, RowError{Line: headerLine, Field: name, Message: msg})
		}
		switch {
		case seen[name]:
			bad(fmt.Sprintf("column %q appears twice", name))
		case strings.HasPrefix(name, "label."):
			k := strings.TrimPrefix(name, "label.")
			if err := ValidateName("label", k); err != nil {
				bad(err.Error())
			}
			cols[i] = column{name: name, label: k}
			f.labelColumns[k] = true
		case csvColumns[name] != nil:
			cols[i] = column{name: name, set: csvColumns[name]}
		case name == "":
			bad(fmt.Sprintf("column %d has no name", i+1))
		default:
			bad(fmt.Sprintf("unknown column %q: want %s, or label.KEY", name, strings.Join(CSVColumns(), ", ")))
		}
		seen[name] = true
	}
	if len(problems) > 0 {
		return nil, problems
	}
	for len(problems) < maxImportErrors {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return nil, err
			}
			msg := pe.Err.Error()
			if errors.Is(pe.Err, csv.ErrFieldCount) {
				msg = fmt.Sprintf("%d cells, but the header has %d columns", len(rec), len(header))
			}
			problems = append(problems, RowError{Line: pe.Line, Row: len(f.Rows) + len(problems) + 1, Message: msg})
			continue
		}
		line, _ := r.FieldPos(0)
		row := ImportRow{Line: line}
		var rowErr *RowError
		for i, cell := range rec {
			v := strings.TrimSpace(cell)
			if v == "" {
				continue
			}
			c := cols[i]
			if c.label != "" {
				if _, dup := row.Machine.Labels[c.label]; dup {
					rowErr = &RowError{Line: line, Field: c.name, Message: "label " + c.label + " is also in the labels column"}
					break
				}
				setLabel(&row.Machine, c.label, v)
				continue
			}
			if err := c.set(&row.Machine, v); err != nil {
				rowErr = &RowError{Line: line, Field: c.name, Message: err.Error()}
				break
			}
		}
		if rowErr != nil {
			rowErr.Row = len(f.Rows) + len(problems) + 1
			problems = append(problems, *rowErr)
			continue
		}
		f.Rows = append(f.Rows, row)
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return f, nil
}

// maxYAMLDepth bounds nesting in a YAML row (a row is two levels deep).
const maxYAMLDepth = 8

func parseImportYAML(data []byte) (*ImportFile, error) {
	f := &ImportFile{Format: FormatYAML}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("the import has no machines")
		}
		return nil, fmt.Errorf("malformed YAML: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("line %d: a second YAML document: give one list of machines", extra.Line)
	}
	list := &doc
	if list.Kind == yaml.DocumentNode && len(list.Content) == 1 {
		list = list.Content[0]
	}
	if list.Kind == yaml.MappingNode {
		var machines *yaml.Node
		for i := 0; i+1 < len(list.Content); i += 2 {
			k := list.Content[i]
			if k.Value != "machines" {
				return nil, ImportErrors{{Line: k.Line, Field: k.Value, Message: fmt.Sprintf("unknown field %q: want machines", k.Value)}}
			}
			machines = list.Content[i+1]
		}
		if machines == nil {
			return nil, fmt.Errorf("the import has no machines")
		}
		list = machines
	}
	if list.Kind == yaml.ScalarNode && list.Tag == "!!null" {
		return nil, fmt.Errorf("the import has no machines")
	}
	if list.Kind != yaml.SequenceNode {
		return nil, ImportErrors{{Line: list.Line, Message: "want a list of machines, or {machines: [...]}"}}
	}
	var problems ImportErrors
	for i, n := range list.Content {
		if len(problems) >= maxImportErrors {
			break
		}
		row := ImportRow{Line: n.Line, lines: map[string]int{}}
		if err := decodeYAMLRow(n, &row); err != nil {
			problems = append(problems, f.rowError(&row, i, FieldOf(err), err))
			continue
		}
		f.Rows = append(f.Rows, row)
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return f, nil
}

// decodeYAMLRow turns a row's node into JSON (every scalar a string: a serial 0012 or a
// label 1 is text) and decodes that strictly, so a row reads exactly as its JSON would;
// it records the line of every field on the way.
func decodeYAMLRow(n *yaml.Node, row *ImportRow) error {
	if n.Kind != yaml.MappingNode {
		return errors.New("want a machine: a map with macs, serial, hostname, labels, bmc and the other row fields")
	}
	v, err := yamlValue(n, "", row.lines, 0)
	if err != nil {
		return err
	}
	js, err := json.Marshal(v)
	if err != nil {
		return err
	}
	err = jsonv2.Unmarshal(js, &row.Machine, jsonv2.RejectUnknownMembers(true))
	var se *jsonv2.SemanticError
	if errors.As(err, &se) {
		field := strings.ReplaceAll(strings.TrimPrefix(string(se.JSONPointer), "/"), "/", ".")
		if i := strings.LastIndexByte(field, '.'); i > 0 && isDigits(field[i+1:]) {
			field = field[:i] // macs.2 → macs
		}
		if errors.Is(se.Err, jsonv2.ErrUnknownName) {
			return fieldErrorf(field, "unknown field %q", se.JSONPointer.LastToken())
		}
		return fieldErrorf(field, "%s: want %s", field, wantOf(field))
	}
	if err == nil && row.Machine.BMC != nil && row.Machine.BMC.Password != "" {
		return fieldErrorf("bmc.password", "a password is not written in the import file: "+
			"name a file (password_file, mode 0600) or an environment variable (password_env) that holds it")
	}
	return err
}

func isDigits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

func wantOf(field string) string {
	switch {
	case field == "macs":
		return "a list of MACs"
	case field == "labels", field == "bmc":
		return "a map"
	}
	return "a single value"
}

// yamlValue converts a node to a JSON-ready value: maps, lists, strings and nulls.
func yamlValue(n *yaml.Node, path string, lines map[string]int, depth int) (any, error) {
	if depth > maxYAMLDepth {
		return nil, fieldErrorf(path, "nested too deep")
	}
	if n.Kind == yaml.AliasNode {
		return nil, fieldErrorf(path, "YAML aliases are not allowed in an import")
	}
	if path != "" {
		if _, ok := lines[path]; !ok {
			lines[path] = n.Line
		}
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return nil, fieldErrorf(path, "line %d: a key must be a name", k.Line)
			}
			sub := k.Value
			if path != "" {
				sub = path + "." + k.Value
			}
			if _, dup := m[k.Value]; dup {
				lines[sub] = k.Line
				return nil, fieldErrorf(sub, "%s is given twice", sub)
			}
			lines[sub] = k.Line
			v, err := yamlValue(n.Content[i+1], sub, lines, depth+1)
			if err != nil {
				return nil, err
			}
			m[k.Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := yamlValue(c, path, lines, depth+1)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, nil
		}
		return n.Value, nil
	}
	return nil, fieldErrorf(path, "unexpected YAML")
}
