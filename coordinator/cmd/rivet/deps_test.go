package main

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/rivetmetal/rivet"

// TestCoordinatorLinksNoAgentOrTestHelper keeps the coordinator binary apart from the agent
// (they share only shared/ and internal/) and free of test harnesses: a bench or simulator
// that exercises agent code belongs in rivet-bench, not in what operators install.
func TestCoordinatorLinksNoAgentOrTestHelper(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	var own int
	for _, pkg := range deps {
		if pkg == module || strings.HasPrefix(pkg, module+"/") {
			own++
		}
		if why := forbidden(pkg); why != "" {
			t.Errorf("the rivet binary links %s, %s", pkg, why)
		}
	}
	if own < 2 {
		t.Fatalf("go list -deps listed %d of the module's packages; the check would see nothing:\n%s", own, out)
	}
}

// forbidden says why the coordinator binary must not link pkg, or "" when it may.
func forbidden(pkg string) string {
	rel, ok := strings.CutPrefix(pkg, module+"/")
	if !ok {
		return "" // the standard library's internal/synctest and the like are not ours
	}
	if rel == "agent" || strings.HasPrefix(rel, "agent/") {
		return "which is agent code"
	}
	if rel == "integration" || strings.HasPrefix(rel, "integration/") {
		return "which is an integration test"
	}
	for _, elem := range strings.Split(rel, "/") {
		// coordinatortest, dhcptest, ... and testenv
		if strings.HasSuffix(elem, "test") || strings.HasPrefix(elem, "test") {
			return "which is a test helper"
		}
	}
	return ""
}

// TestForbiddenNamesWhatItMust checks the rule itself on the names it is for.
func TestForbiddenNamesWhatItMust(t *testing.T) {
	for pkg, want := range map[string]bool{
		module + "/agent":                                 true,
		module + "/agent/step/disk":                       true,
		module + "/coordinator/coordinatortest":           true,
		module + "/coordinator/netboot/dhcp/dhcptest":     true,
		module + "/agent/step/image/imagetest":            true,
		module + "/coordinator/status/statustest":         true,
		module + "/internal/testenv":                      true,
		module + "/integration":                           true,
		module + "/coordinator":                           false,
		module + "/coordinator/status":                    false,
		module + "/shared":                                false,
		module + "/internal/netclaim":                     false,
		module + "/agentless":                             false,
		"internal/synctest":                               false,
		"github.com/hashicorp/raft":                       false,
		module + "/coordinator/netboot/dhcp/dhcptestdata": false,
	} {
		if got := forbidden(pkg) != ""; got != want {
			t.Errorf("forbidden(%s) = %v, want %v", pkg, got, want)
		}
	}
}
