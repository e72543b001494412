package shared

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// importCSV is a 200-row CSV import (after a comment and the header on lines 1-2, row i
// is on line i+2), with the rows bad[i] replaced.
func importCSV(n int, bad map[int]string) string {
	var b strings.Builder
	b.WriteString("# rack A and B\n")
	b.WriteString("hostname,mac,serial,address,bmc_driver,bmc_address,bmc_user,bmc_password_env,label.rack,labels\n")
	for i := 1; i <= n; i++ {
		if row, ok := bad[i]; ok {
			b.WriteString(row + "\n")
			continue
		}
		fmt.Fprintf(&b, "node-%03d,52:54:00:00:%02x:%02x;52:54:01:00:%02x:%02x,SN%05d,10.0.%d.%d/16,ipmi,10.9.%d.%d,admin,BMC_PW,r%d,pool=swarm;tier=a\n",
			i, i/256, i%256, i/256, i%256, i, i/256, i%256+1, i/256, i%256+1, i%3)
	}
	return b.String()
}

func rowErrors(t *testing.T, err error) ImportErrors {
	t.Helper()
	var es ImportErrors
	if !errors.As(err, &es) {
		t.Fatalf("error %v (%T) is not ImportErrors", err, err)
	}
	return es
}

func resolveAll(b *BMC) error {
	if b.PasswordEnv != "" {
		b.Password, b.PasswordEnv = "pw-"+b.PasswordEnv, ""
	}
	return nil
}

func TestCSVImportNamesEveryBadRowByLineAndField(t *testing.T) {
	bad := map[int]string{
		17:  "node-017,52:54:00:00:00:11,SN00017,10.0.0.17/16,ipmi,10.9.0.18,admin,BMC_PW,Rack 1,", // label value ok? no: key fine, value has space → fine; see below
		88:  "node-088,52:54:00:zz:00:58,SN00088,10.0.0.88/16,ipmi,10.9.0.89,admin,BMC_PW,r1,",     // bad MAC
		150: "node-150,52:54:00:00:00:96,SN00150,10.0.0.150/33,ipmi,10.9.0.151,admin,BMC_PW,r0,",   // bad address
	}
	bad[17] = "node-017,52:54:00:00:00:11,SN00017,10.0.0.17/16,telnet,10.9.0.18,admin,BMC_PW,r2," // bad driver
	good := importCSV(200, nil)
	f, err := ParseImportFile("rack.csv", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	req, err := f.Check(resolveAll)
	if err != nil {
		t.Fatalf("the good file: %v", err)
	}
	if len(req.Machines) != 200 || req.Machines[0].BMC.Password != "pw-BMC_PW" || req.Machines[0].Labels["tier"] != "a" ||
		req.Machines[4].Labels["rack"] != "r2" || len(req.Machines[4].MACs) != 2 || req.Machines[4].Address != "10.0.0.6/16" {
		t.Fatalf("good file read as %d rows, first %+v", len(req.Machines), req.Machines[4])
	}
	f, err = ParseImportFile("rack.csv", []byte(importCSV(200, bad)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Check(resolveAll)
	es := rowErrors(t, err)
	want := []RowError{{Line: 19, Field: "bmc_driver"}, {Line: 90, Field: "mac"}, {Line: 152, Field: "address"}}
	if len(es) != len(want) {
		t.Fatalf("%d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i, w := range want {
		if es[i].Line != w.Line || es[i].Field != w.Field {
			t.Errorf("error %d is line %d field %s, want line %d field %s (%v)", i, es[i].Line, es[i].Field, w.Line, w.Field, es[i])
		}
	}
	if msg := err.Error(); !strings.Contains(msg, "line 90, field mac") || !strings.Contains(msg, "3 bad rows, nothing imported") {
		t.Errorf("message %q", msg)
	}
}

// TestImportProblemsOfTheFileItself: each mistake in a file's shape is one error with its
// line and field, in CSV (columns, cells) and in YAML (fields, nodes).
func TestImportProblemsOfTheFileItself(t *testing.T) {
	for _, tt := range []struct {
		name, file, text string
		line             int
		field            string
	}{
		{"unknown column", "x.csv", "hostname,mac,colour\nn1,52:54:00:00:00:01,red\n", 1, "colour"},
		{"duplicate column", "x.csv", "mac,MAC\n52:54:00:00:00:01,52:54:00:00:00:02\n", 1, "mac"},
		{"cell count", "x.csv", "hostname,mac\nn1,52:54:00:00:00:01\nn2,52:54:00:00:00:02,extra\n", 3, ""},
		{"duplicate mac", "x.csv", "hostname,mac\nn1,52:54:00:00:00:01\n\n# gap\nn2,52:54:00:00:00:01\n", 5, "mac"},
		{"labels cell", "x.csv", "hostname,mac,labels\nn1,52:54:00:00:00:01,rack\n", 2, "labels"},
		{"label column value", "x.csv", "hostname,mac,label.rack\nn1,52:54:00:00:00:01,\"a\tb\"\n", 2, "label.rack"},
		{"bad label column", "x.csv", "hostname,mac,label.r@ck\nn1,52:54:00:00:00:01,r1\n", 1, "label.r@ck"},
		{"no match key", "x.csv", "hostname,mac\nn1,\n", 2, "mac"},
		{"password and no reference", "x.csv", "mac,bmc_driver,bmc_address,bmc_user\n52:54:00:00:00:01,ipmi,10.0.0.1,admin\n", 2, "bmc_password"},
		{"redfish needs https", "x.csv", "mac,bmc_driver,bmc_address,bmc_user,bmc_password_env\n52:54:00:00:00:01,redfish,10.0.0.1,admin,PW\n", 2, "bmc_address"},
		{"network address", "x.csv", "mac,address\n52:54:00:00:00:01,10.0.0.0/24\n", 2, "address"},
		{"unknown field", "x.yaml", "- hostname: n1\n  macs: [\"52:54:00:00:00:01\"]\n  colour: red\n", 3, "colour"},
		{"unknown bmc field", "x.yaml", "- macs: [\"52:54:00:00:00:01\"]\n  bmc:\n    driver: ipmi\n    pasword: x\n", 4, "bmc.pasword"},
		{"macs not a list", "x.yaml", "- serial: S1\n- macs: {a: b}\n", 2, "macs"},
		{"row not a map", "x.yaml", "- serial: S1\n- just text\n", 2, ""},
		{"duplicate key", "x.yaml", "- serial: S1\n  serial: S2\n", 2, "serial"},
		{"password in the file", "x.yaml", "- macs: [\"52:54:00:00:00:01\"]\n  bmc: {driver: ipmi, address: h, user: u, password: hunter22}\n", 2, "bmc.password"},
		{"machine id", "x.yaml", "- macs: [\"52:54:00:00:00:01\"]\n  machine_id: m-1\n", 2, "machine_id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseImportFile(tt.file, []byte(tt.text))
			if err == nil {
				_, err = f.Check(resolveAll)
			}
			es := rowErrors(t, err)
			if len(es) != 1 || es[0].Line != tt.line || es[0].Field != tt.field {
				t.Fatalf("errors %#v, want one on line %d field %q", es, tt.line, tt.field)
			}
		})
	}
}

func importYAML(n int, bad map[int]string) string {
	var b strings.Builder
	b.WriteString("# two lines of comment\nmachines:\n")
	for i := 1; i <= n; i++ {
		if row, ok := bad[i]; ok {
			b.WriteString(row)
			continue
		}
		fmt.Fprintf(&b, "  - hostname: node-%03d\n    macs: [\"52:54:00:00:%02x:%02x\"]\n    labels: {rack: r%d}\n"+
			"    bmc:\n      driver: ipmi\n      address: 10.9.%d.%d\n      user: admin\n      password_env: BMC_PW\n",
			i, i/256, i%256, i%3, i/256, i%256+1)
	}
	return b.String()
}

// Each row of importYAML is 8 lines; row i starts on line 3+8(i-1).
func yamlRowLine(i int) int { return 3 + 8*(i-1) }

func TestYAMLImportNamesEveryBadRowByLineAndField(t *testing.T) {
	row := func(i int, mac, rack, user string) string {
		return fmt.Sprintf("  - hostname: node-%03d\n    macs: [\"%s\"]\n    labels: {rack: %s}\n"+
			"    bmc:\n      driver: ipmi\n      address: 10.9.0.%d\n      user: %s\n      password_env: BMC_PW\n", i, mac, rack, i, user)
	}
	bad := map[int]string{
		5:   row(5, "52:54:00:00:00:05", "\"a\\tb\"", "admin"), // labels.rack, line +2
		60:  row(60, "not-a-mac", "r1", "admin"),               // macs, line +1
		199: row(199, "52:54:00:00:00:c7", "r1", "\"\""),       // bmc.user, line +6
	}
	f, err := ParseImportFile("rack.yaml", []byte(importYAML(200, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if req, err := f.Check(resolveAll); err != nil || len(req.Machines) != 200 || req.Machines[199].BMC.Password != "pw-BMC_PW" {
		t.Fatalf("the good file: %v", err)
	}
	f, err = ParseImportFile("rack.yaml", []byte(importYAML(200, bad)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Check(resolveAll)
	es := rowErrors(t, err)
	want := []RowError{{Line: yamlRowLine(5) + 2, Field: "labels.rack"}, {Line: yamlRowLine(60) + 1, Field: "macs"},
		{Line: yamlRowLine(199) + 6, Field: "bmc.user"}}
	if len(es) != len(want) {
		t.Fatalf("%d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i, w := range want {
		if es[i].Line != w.Line || es[i].Field != w.Field {
			t.Errorf("error %d is line %d field %s, want line %d field %s (%v)", i, es[i].Line, es[i].Field, w.Line, w.Field, es[i])
		}
	}
}

// A password written into the file itself is refused: the file names a reference.
func TestImportRefusesAPasswordInTheFile(t *testing.T) {
	f, err := ParseImportFile("x.csv", []byte("mac,bmc_driver,bmc_address,bmc_user,bmc_password\n52:54:00:00:00:01,ipmi,h,u,secret\n"))
	if err == nil {
		t.Fatalf("a bmc_password column was read: %+v", f.Rows)
	}
	if es := rowErrors(t, err); es[0].Field != "bmc_password" || es[0].Line != 1 {
		t.Fatalf("%v", err)
	}
}

func TestExampleImportFilesParse(t *testing.T) {
	for _, name := range []string{"../packaging/config/expected.example.yaml", "../packaging/config/expected.example.csv"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := ParseImportFile(name, data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var refs []string
		req, err := f.Check(func(b *BMC) error {
			refs = append(refs, b.PasswordFile+b.PasswordEnv)
			b.Password, b.PasswordFile, b.PasswordEnv = "x", "", ""
			return nil
		})
		if err != nil || len(req.Machines) < 2 || len(refs) == 0 {
			t.Fatalf("%s: %v (%d rows, references %v)", name, err, len(req.Machines), refs)
		}
		if !slices.ContainsFunc(req.Machines, func(e ExpectedMachine) bool { return e.Labels["rack"] != "" }) {
			t.Errorf("%s: no row has a rack label", name)
		}
	}
}

func TestStaticAddress(t *testing.T) {
	for in, want := range map[string]string{"10.0.4.21/24": "10.0.4.21/24", " 10.0.4.21/24": "10.0.4.21/24",
		"fd00::5/64": "fd00::5/64", "10.0.4.0/24": "", "10.0.4.255/24": "", "10.0.4.21": "", "10.0.4.21/33": "",
		"224.0.0.1/4": "", "127.0.0.1/8": "", "10.0.0.1/31": "10.0.0.1/31", "10.0.0.0/31": "10.0.0.0/31"} {
		got, err := canonicalAddress(in)
		if (err == nil) != (want != "") || got != want {
			t.Errorf("canonicalAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
