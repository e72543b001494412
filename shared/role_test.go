package shared

import (
	"strings"
	"testing"
)

const roleSHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseRoles(t *testing.T) {
	worker := `name: worker
selector:
  labels: {rack: r1}
  min_cores: 4
  disk_type: ssd
install_disk:
  smallest: {type: ssd, min_size_gb: 100}
image:
  url: /v1/images/debian-12.raw.zst
  sha256: ` + roleSHA + `
swarm: {role: worker}
`
	manager := strings.NewReplacer("name: worker", "name: manager", "role: worker", "role: auto").Replace(worker)
	tests := []struct {
		name  string
		input string
		roles []string // names, in order; nil means an error is expected
		err   string
	}{
		{"one YAML role", worker, []string{"worker"}, ""},
		{"several YAML documents", worker + "---\n" + manager, []string{"worker", "manager"}, ""},
		{"leading and trailing document markers", "---\n" + worker + "---\n", []string{"worker"}, ""},
		{"roles list in YAML", "roles:\n- " + strings.ReplaceAll(strings.TrimSpace(worker), "\n", "\n  "), []string{"worker"}, ""},
		{"JSON object", `{"name":"db","selector":{},"install_disk":{"serial":"S1"},"image":{"url":"https://img/x.raw","sha256":"` +
			roleSHA + `"},"swarm":{"role":"none"}}`, []string{"db"}, ""},
		{"JSON roles list", `{"roles":[{"name":"a","install_disk":{"wwn":"0x5000"},"image":{"url":"/x","sha256":"` + roleSHA +
			`"},"swarm":{"role":"worker"}}]}`, []string{"a"}, ""},
		{"unknown field", strings.Replace(worker, "min_cores: 4", "min_cpus: 4", 1), nil, "unknown field"},
		{"unknown field in roles list", `{"roles":[],"extra":1}`, nil, "unknown field"},
		{"empty file", "", nil, "no roles"},
		{"only comments", "# nothing\n---\n", nil, "no roles"},
		{"duplicate names", worker + "---\n" + worker, nil, "given twice"},
		{"a list, not an object", "- a\n- b\n", nil, "objects"},
		{"malformed YAML", "name: [unclosed\n", nil, "YAML"},
		{"invalid role", strings.Replace(worker, "role: worker", "role: boss", 1), nil, "swarm.role"},
		{"two disk rules", strings.Replace(worker, "install_disk:\n", "install_disk:\n  serial: S1\n", 1), nil, "exactly one"},
		{"bad image digest", strings.Replace(worker, roleSHA, "abc", 1), nil, "sha256"},
		{"oversized", strings.Repeat("#", MaxBody+1), nil, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := ParseRoles([]byte(tt.input))
			if tt.roles == nil {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range list.Roles {
				names = append(names, r.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.roles, ",") {
				t.Errorf("roles = %v, want %v", names, tt.roles)
			}
		})
	}
	list, err := ParseRoles([]byte(worker))
	if err != nil {
		t.Fatal(err)
	}
	r := list.Roles[0]
	if r.Selector.Labels["rack"] != "r1" || r.Selector.MinCores != 4 || r.InstallDisk.Smallest == nil ||
		r.InstallDisk.Smallest.MinSizeGB != 100 || r.Image.SHA256 != roleSHA || r.Swarm.Role != SwarmWorker {
		t.Errorf("worker role decoded as %+v", r)
	}
}

func TestValidateName(t *testing.T) {
	for name, ok := range map[string]bool{
		"a": true, "web-1": true, strings.Repeat("a", 63): true, strings.Repeat("a", 64): false,
		"": false, "-a": false, "a-": false, "A": false, "a_b": false, "a.b": false,
	} {
		if (ValidateName("role", name) == nil) != ok {
			t.Errorf("ValidateName(%q) ok = %v, want %v", name, !ok, ok)
		}
	}
}
