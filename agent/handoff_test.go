package agent

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/agent/config"
	"github.com/rivetmetal/rivet/shared"
)

// TestInstalledFiles: the installed OS's agent gets a service-mode config with the same
// coordinators, CA and labels, never the enrolment token, and this machine's token.
func TestInstalledFiles(t *testing.T) {
	cfg := config.Config{Mode: shared.ModeRAM, Servers: []string{"https://10.0.0.1:7443"},
		CAFingerprint: "sha256:" + strings.Repeat("ab", 32), EnrolToken: "rve_secret-enrolment",
		Labels: map[string]string{"rack": "r7"}, StateDir: "/var/lib/rivet", LogLevel: "debug"}
	a := New(cfg, Deps{})
	if _, _, _, err := a.InstalledFiles(); err == nil {
		t.Fatal("InstalledFiles before registration succeeded; want an error")
	}
	a.adopt(keptState{MachineID: "m-00112233aabbccdd", MachineToken: "rvm_token"}, &shared.Client{}, shared.GossipInfo{}, "")
	file, state, name, err := a.InstalledFiles()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(file), "rve_secret-enrolment") {
		t.Fatalf("the installed config carries the enrolment token:\n%s", file)
	}
	got, err := config.ParseFile(file)
	if err != nil {
		t.Fatalf("the installed config does not parse: %v\n%s", err, file)
	}
	if got.Mode != "" || got.Servers[0] != cfg.Servers[0] || got.CAFingerprint != cfg.CAFingerprint || got.Labels["rack"] != "r7" {
		t.Fatalf("installed config = %+v", got)
	}
	var kept keptState
	if err := json.Unmarshal(state, &kept); err != nil || kept.MachineID != "m-00112233aabbccdd" || kept.MachineToken != "rvm_token" || name != stateFile {
		t.Fatalf("state %s = %s (%v)", name, state, err)
	}
}
