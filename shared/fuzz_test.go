package shared

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The fuzz targets feed arbitrary input to everything that reads from the network or
// from an operator. Each asserts that nothing panics, that refusals are clean 400s, and
// that whatever is accepted survives its own re-encoding: what Rivet writes, Rivet reads
// back to the same value.

// checkDecodeRoundTrip decodes data into a fresh value from fresh; when that succeeds,
// the value's JSON must decode again, to the same JSON.
func checkDecodeRoundTrip[T any, PT interface {
	*T
	Validator
}](t *testing.T, data []byte) PT {
	t.Helper()
	v := PT(new(T))
	if err := DecodeBytes(data, v); err != nil {
		if StatusOf(err) != http.StatusBadRequest {
			t.Fatalf("refusal is not a 400: %v", err)
		}
		return nil
	}
	first, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("an accepted value does not encode: %v", err)
	}
	again := PT(new(T))
	if err := DecodeBytes(first, again); err != nil {
		t.Fatalf("an accepted value does not decode after encoding: %v\nencoded: %s", err, first)
	}
	second, err := json.Marshal(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Fatalf("round trip changed the value:\n%s\n%s", first, second)
	}
	return v
}

const fuzzInventory = `{"system":{"vendor":"QEMU","product":"Standard PC","uuid":"6b1f3f3e-7d2a-4c55-9a0e-2f1d5c3b9a10",` +
	`"firmware":"uefi","hostname":"n1"},"cpu":{"model":"AMD EPYC","sockets":1,"cores":2,"threads":4,"flags":["avx2","svm"]},` +
	`"memory":{"total_bytes":25769803776,"dimms":[{"locator":"DIMM 0","size_bytes":17179869184,"type":"RAM"}]},` +
	`"disks":[{"name":"vda","size_bytes":274877906944,"rotational":true,"removable":false,"type":"virtio","serial":"s1",` +
	`"partitions":[{"name":"vda1","size_bytes":1048576,"fs_type":"ext4","label":"root"}]}],` +
	`"nics":[{"name":"eth0","mac":"52:54:00:12:34:56","driver":"virtio_net","pci_address":"0000:00:03.0","link":true,` +
	`"speed_mbps":1000,"addrs":["10.0.0.5/24"]}],"pci":[{"address":"0000:00:03.0","vendor_id":"1af4","product_id":"1041",` +
	`"vendor":"Red Hat, Inc."}],"load":{"load1":0.5,"load5":0.25,"load15":0.1,"uptime_s":100},` +
	`"errors":{"pci":"no pci.ids"},"collected_at":"2026-01-02T03:04:05.123Z","took_ms":4}`

func FuzzDecodeInventory(f *testing.F) {
	f.Add([]byte(fuzzInventory))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"system":{"uuid":"00000000-0000-0000-0000-000000000000","serial":"Default string"},` +
		`"nics":[{"name":"eno1","mac":"3c:ec:ef:00:00:01","pci_address":"0000:00:1f.6"}]}`))
	f.Add([]byte(`{"nics":[{"name":"ib0","mac":"80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0f:65:31"}]}`))
	f.Add([]byte(`{"collected_at":"9999-12-31T23:59:59+23:59"}`))
	f.Add([]byte(`{"disks":[{"name":"sda","partitions":[{},{"name":"sda1"}]}],"errors":{"disks":"trimmed: 300 partitions on sda, kept 128"}}`))
	f.Add([]byte(`{"cpu":{"model":"` + strings.Repeat("\u00e9", 200) + `","flags":["avx2"]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		inv := checkDecodeRoundTrip[Inventory](t, data)
		if inv == nil {
			return
		}
		// The coordinator derives the id of every accepted inventory.
		if id, err := DeriveMachineID(inv); err == nil {
			if err := id.ID.Validate(); err != nil {
				t.Fatalf("derived an invalid id: %v", err)
			}
		}
		inv.PhysicalNICs()
		inv.HasMAC("52:54:00:12:34:56")
	})
}

func FuzzDecodeRegister(f *testing.F) {
	f.Add([]byte(`{"inventory":` + fuzzInventory + `,"labels":{"rack":"r1"},"mode":"ram","version":"v1","addr":"10.0.0.5"}`))
	f.Add([]byte(`{"inventory":{},"mode":"service","version":"dev","addr":"fe80::1"}`))
	f.Add([]byte(`{"inventory":{},"mode":"ram","labels":{"Bad":"x"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip[RegisterRequest](t, data)
	})
}

func FuzzDecodeStepReport(f *testing.F) {
	f.Add([]byte(`{"generation":3,"step":"image","status":"running","attempt":1,"progress":{"done":10,"total":100,"bytes_per_sec":1.5e6}}`))
	f.Add([]byte(`{"generation":3,"step":"disk","status":"failed","error":"no disk with serial S1","hint":"check the role"}`))
	f.Add([]byte(`{"step":"disk","status":"succeeded","progress":{"done":-1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := checkDecodeRoundTrip[StepReport](t, data)
		if r != nil && r.Progress != nil {
			r.Progress.Percent()
		}
	})
}

func FuzzDecodeSwarmReport(f *testing.F) {
	f.Add([]byte(`{"node_id":"abc123","cluster_id":"c1","addr":"10.0.0.5:2377","manager_token":"SWMTKN-1-m","worker_token":"SWMTKN-1-w"}`))
	f.Add([]byte(`{"node_id":"abc123"}`))
	f.Add([]byte(`{"node_id":"abc123","manager_token":"x"}`))
	f.Add([]byte(`{"node_id":"abc123","cluster_id":"c1","addr":"10.0.0.5:2377","manager_token":"SWMTKN-1-r","rotated":true}`))
	f.Add([]byte(`{"node_id":"abc123","cluster_id":"c1","addr":"10.0.0.5:2378"}`))
	f.Add([]byte(`{"node_id":"abc123","addr":"[fe80::1%eth0]:2377","manager_token":"a","worker_token":"b","rotated":true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip[SwarmReport](t, data)
	})
}

func FuzzDecodeJoinRequest(f *testing.F) {
	f.Add([]byte(`{"id":"c2","raft_addr":"10.0.0.2:7000","api_addr":"10.0.0.2:7443"}`))
	f.Add([]byte(`{"id":"c2","raft_addr":"[fe80::1%eth0]:7000","api_addr":":7443"}`))
	f.Add([]byte(`{"id":"C2","raft_addr":"10.0.0.2","api_addr":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip[JoinRequest](t, data)
	})
}

func FuzzDecodeCheckin(f *testing.F) {
	f.Add([]byte(`{"mode":"service","version":"v1.2.3","addr":"10.0.0.5","generation":4}`))
	f.Add([]byte(`{"mode":"ram","version":"dev"}`))
	f.Add([]byte(`{"mode":"kernel","version":"","generation":-1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip[CheckinRequest](t, data)
	})
}

func FuzzDecodeBoot(f *testing.F) {
	f.Add([]byte(`{"boot":"disk"}`))
	f.Add([]byte(`{"boot":"none"}`))
	f.Add([]byte(`{"boot":"floppy"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip[BootRequest](t, data)
	})
}

func FuzzDecodeAction(f *testing.F) {
	f.Add([]byte(`{"reason":"disk replaced, ticket OPS-12"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"reason":"` + strings.Repeat("x", 1100) + `"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip[ActionRequest](t, data)
	})
}

func FuzzDecodeToken(f *testing.F) {
	f.Add([]byte(`{"name":"alice","role":"viewer"}`))
	f.Add([]byte(`{"name":"ci-bot","role":"admin"}`))
	f.Add([]byte(`{"name":"Bob","role":"root"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip[TokenRequest](t, data)
	})
}

func FuzzParseRoles(f *testing.F) {
	f.Add([]byte("name: worker\nselector: {labels: {rack: r1}, min_cores: 4}\ninstall_disk: {smallest: {type: ssd, min_size_gb: 10}}\n" +
		"image: {url: /v1/images/d.raw.zst, sha256: " + roleSHA + "}\nswarm: {role: auto}\n"))
	f.Add([]byte("---\nname: a\ninstall_disk: {serial: S1}\nimage: {url: 'https://x/y', sha256: " + roleSHA + "}\nswarm: {role: none}\n" +
		"---\nname: b\ninstall_disk: {wwn: '0x5000'}\nimage: {url: /y, sha256: " + roleSHA + ", compression: zstd}\nswarm: {role: worker}\n"))
	f.Add([]byte(`{"roles":[{"name":"a","description":"caf\u00e9","install_disk":{"serial":"S1"},"image":{"url":"/x","sha256":"` +
		roleSHA + `"},"swarm":{"role":"manager"}}]}`))
	f.Add([]byte("roles: [1, 2]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := ParseRoles(data)
		if err != nil {
			return
		}
		first, err := json.Marshal(list)
		if err != nil {
			t.Fatalf("accepted roles do not encode: %v", err)
		}
		again, err := ParseRoles(first)
		if err != nil {
			t.Fatalf("accepted roles, encoded as JSON, are refused: %v\nencoded: %s", err, first)
		}
		second, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("round trip changed the roles:\n%s\n%s", first, second)
		}
	})
}

func FuzzParseTags(f *testing.F) {
	f.Add("k", KindAgent, "id", "m-0123456789abcdef", "st", "ready", "v", "v1.0")
	f.Add("k", KindCoordinator, "api", "10.0.0.1:7443", "step", "swarm", "v", "")
	f.Add("k", KindAgent, "id", "m-0123456789abcdef", "x", "y", "st", "lost")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3, k4, v4 string) {
		tags, err := ParseTags(map[string]string{k1: v1, k2: v2, k3: v3, k4: v4})
		if err != nil {
			return
		}
		m := tags.Map()
		size := 0
		for k, v := range m {
			size += len(k) + len(v)
		}
		if size > MaxTagBytes {
			t.Fatalf("accepted tags encode to %d bytes, over Serf's limit", size)
		}
		again, err := ParseTags(m)
		if err != nil {
			t.Fatalf("accepted tags, encoded, are refused: %v (%v)", err, m)
		}
		if again != tags {
			t.Fatalf("round trip changed the tags: %+v, then %+v", tags, again)
		}
	})
}

func FuzzParseCmdline(f *testing.F) {
	fp := "sha256:" + strings.Repeat("0f", 32)
	f.Add("BOOT_IMAGE=/vmlinuz rivet.url=https://10.0.0.1:7443/,http://c2:80 rivet.ca=" + fp + " rivet.token=t0k rivet.labels=rack=r1,zone=a rivet.debug")
	f.Add(`rivet.labels="note=two words" "rivet.token=a b" rivet.debug=0`)
	f.Add(`rivet.url="https://h/a b" rivet.token=x"y z"`)
	f.Add("rivet.url=ftp://x rivet.ca=sha256:zz")
	f.Add("rivet.ticket=rvt_" + strings.Repeat("0a", 24) + " BOOTIF=01-52-54-00-12-34-56")
	f.Add("rivet.ticket=rvt_" + strings.Repeat("A", 48))
	f.Fuzz(func(t *testing.T, cmdline string) {
		p, err := ParseCmdline(cmdline)
		if err != nil {
			return
		}
		encoded := encodeCmdline(p)
		if len(encoded) > 4096 {
			return // the parse expanded invalid UTF-8 or trailing parts; not comparable
		}
		again, err := ParseCmdline(encoded)
		if err != nil {
			t.Fatalf("accepted boot parameters, encoded, are refused: %v\nencoded: %q", err, encoded)
		}
		if !bootParamsEqual(p, again) {
			t.Fatalf("round trip changed the parameters:\n%+v\n%+v\nencoded: %q", p, again, encoded)
		}
	})
}

// encodeCmdline writes boot parameters the way the coordinator's iPXE script would.
func encodeCmdline(p BootParams) string {
	var fields []string
	add := func(k, v string) {
		field := k + "=" + v
		if strings.ContainsAny(field, " \t\n") {
			field = `"` + field + `"`
		}
		fields = append(fields, field)
	}
	if len(p.URLs) > 0 {
		add(CmdlineURL, strings.Join(p.URLs, ","))
	}
	if p.CAFingerprint != "" {
		add(CmdlineCA, p.CAFingerprint)
	}
	if p.EnrolToken != "" {
		add(CmdlineToken, p.EnrolToken)
	}
	if p.Ticket != "" {
		add(CmdlineTicket, p.Ticket)
	}
	if p.Labels != nil {
		var kvs []string
		for k, v := range p.Labels {
			kvs = append(kvs, k+"="+v)
		}
		slices.Sort(kvs)
		add(CmdlineLabels, strings.Join(kvs, ","))
	}
	if p.Debug {
		fields = append(fields, CmdlineDebug)
	}
	return strings.Join(fields, " ")
}

// FuzzParseImport: an expected-machines file either fails with an error or gives rows
// that are valid, canonical (parsing the re-encoded rows gives the same rows) and unique.
func FuzzParseImport(f *testing.F) {
	f.Add([]byte("- hostname: r1-n01\n  macs: [\"52:54:00:AA:01:01\"]\n  labels: {rack: r1}\n"))
	f.Add([]byte(`{"machines":[{"serial":"CZ2345ABCD","uuid":"5A4A0000-0000-4000-8000-000000000001"}]}`))
	f.Add([]byte(`[{"macs":["52:54:00:00:00:01"]},{"macs":["52-54-00-00-00-01"]}]`))
	f.Add([]byte(`[{"uuid":"03000200-0400-0500-0006-000700080009"}]`))
	f.Add([]byte(`[{"macs":["52:54:00:00:00:01"],"machine_id":"m-1"}]`))
	f.Add([]byte("machines:\n- serial: \"To be filled by O.E.M.\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ParseImport(data)
		if err != nil {
			return
		}
		js, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseImport(js)
		if err != nil {
			t.Fatalf("accepted rows, re-encoded, are refused: %v\n%s", err, js)
		}
		if !reflect.DeepEqual(req, again) {
			t.Fatalf("rows are not canonical:\n%+v\n%+v", req, again)
		}
	})
}

// checkImportFile parses data as an import file of the given name: nothing panics, every
// row error has a line inside the file, and accepted rows (with their password references
// resolved) pass the coordinator's own check and read back the same from their JSON.
func checkImportFile(t *testing.T, name string, data []byte) {
	f, err := ParseImportFile(name, data)
	lines := bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) + 1 // YAML breaks lines at CR too
	checkLines := func(err error) {
		var es ImportErrors
		if errors.As(err, &es) {
			for _, e := range es {
				if e.Line < 0 || e.Line > lines {
					t.Fatalf("error on line %d of a %d-line file: %v", e.Line, lines, e)
				}
			}
		}
	}
	if err != nil {
		checkLines(err)
		return
	}
	req, err := f.Check(func(b *BMC) error {
		b.Password, b.PasswordFile, b.PasswordEnv = "resolved", "", ""
		return nil
	})
	if err != nil {
		checkLines(err)
		return
	}
	if err := req.Validate(); err != nil {
		t.Fatalf("rows the file check accepted are refused by the coordinator's: %v", err)
	}
	js, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var again ImportRequest
	if err := DecodeBytes(js, &again); err != nil {
		t.Fatalf("accepted rows, re-encoded, are refused: %v\n%s", err, js)
	}
	if !reflect.DeepEqual(req, &again) {
		t.Fatalf("rows are not canonical:\n%+v\n%+v", req, &again)
	}
}

func FuzzParseImportCSV(f *testing.F) {
	f.Add([]byte("hostname,mac,label.rack,labels\nr1-n01,52:54:00:AA:01:01;52:54:00:aa:01:02,r1,pool=a;tier=b\n"))
	f.Add([]byte("# c\nmac,bmc_driver,bmc_address,bmc_user,bmc_password_env\n52:54:00:00:00:01,ipmi,10.0.0.1:623,admin,PW\n"))
	f.Add([]byte("serial,uuid,address\nCZ1,5A4A0000-0000-4000-8000-000000000001,10.0.0.5/24\n"))
	f.Add([]byte("mac,bmc_driver,bmc_address,bmc_user,bmc_password_file,bmc_tls_sha256\n52:54:00:00:00:01,redfish,https://b,u,f," +
		strings.Repeat("ab", 32) + "\n"))
	f.Add([]byte("mac\n\"52:54:00:00:00:01\n"))
	f.Add([]byte("\ufeffMAC,Hostname\n52:54:00:00:00:01,n1\n52:54:00:00:00:01,n2,x\n"))
	f.Fuzz(func(t *testing.T, data []byte) { checkImportFile(t, "x.csv", data) })
}

func FuzzParseImportYAML(f *testing.F) {
	f.Add([]byte("- hostname: r1-n01\n  macs: [\"52:54:00:AA:01:01\"]\n  labels: {rack: r1}\n  address: 10.0.0.5/24\n"))
	f.Add([]byte("machines:\n- serial: 0012\n  labels: {rack: 1}\n  bmc: {driver: ipmi, address: h, user: u, password_env: PW}\n"))
	f.Add([]byte("- &a {serial: S1}\n- *a\n"))
	f.Add([]byte("- serial: S1\n---\n- serial: S2\n"))
	f.Add([]byte(`[{"macs":["52:54:00:00:00:01"],"bmc":{"driver":"redfish","address":"https://b","user":"u","password_file":"f"}}]`))
	f.Add([]byte("- {serial: S1, serial: S2}\n- [1, 2]\n- ~\n"))
	f.Fuzz(func(t *testing.T, data []byte) { checkImportFile(t, "x.yaml", data) })
}

func FuzzDecodeReprovision(f *testing.F) {
	f.Add([]byte(`{"reason":"new kernel","via":"kexec"}`))
	f.Add([]byte(`{"image":{"url":"/v1/images/os2.raw.zst","sha256":"` + strings.Repeat("a", 64) + `"},"via":"bmc","allow_fewer_managers":true}`))
	f.Add([]byte(`{"image":{"url":"ftp://x","sha256":"zz"},"via":"usb"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip[ReprovisionRequest](t, data)
	})
}

func FuzzDecodeSwarmOpReport(f *testing.F) {
	f.Add([]byte(`{"ok":true,"detail":"removed, join tokens rotated","manager_token":"SWMTKN-1-m","worker_token":"SWMTKN-1-w"}`))
	f.Add([]byte(`{"ok":true,"manager_addr":"10.0.0.9:2377"}`))
	f.Add([]byte(`{"ok":false,"error":"dockerd: node is not down"}`))
	f.Add([]byte(`{"ok":true,"error":"both"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip[SwarmOpReport](t, data)
	})
}

func FuzzDecodeKexec(f *testing.F) {
	file := `{"url":"http://10.0.0.1:8080/boot/files/vmlinuz","sha256":"` + strings.Repeat("b", 64) + `","size":8000000}`
	f.Add([]byte(`{"kernel":` + file + `,"initrd":` + file + `,"cmdline":"console=ttyS0 rivet.ticket=x"}`))
	f.Add([]byte(`{"kernel":{"url":"x","sha256":"","size":-1},"initrd":{},"cmdline":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRoundTrip[KexecAnswer](t, data)
	})
}
