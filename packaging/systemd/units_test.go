// Package systemd holds Rivet's systemd units; this test checks them with
// systemd-analyze verify.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// verify runs systemd-analyze verify on a copy of unit whose ExecStart binary is a stub
// (the real binary is not installed on a build host; verify checks it is executable).
// Only the ExecStart path changes; every other line is verified as shipped. verify exits
// 0 on many complaints (unknown keys, bad values), so any output about the unit fails.
func verify(t *testing.T, analyze, unitText, name string) string {
	t.Helper()
	dir := t.TempDir()
	var out []string
	changed := 0
	for _, line := range strings.Split(unitText, "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
			fields := strings.Fields(rest)
			stub := filepath.Join(dir, "bin", filepath.Base(fields[0]))
			if err := os.MkdirAll(filepath.Dir(stub), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			line = "ExecStart=" + strings.Join(append([]string{stub}, fields[1:]...), " ")
			changed++
		}
		out = append(out, line)
	}
	if changed != 1 {
		t.Fatalf("%s has %d ExecStart lines, want 1", name, changed)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", "--man=no", path)
	msg, err := cmd.CombinedOutput()
	text := strings.TrimSpace(string(msg))
	if err != nil && text == "" {
		text = err.Error()
	}
	return text
}

func readUnit(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "packaging", "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestUnitsVerify(t *testing.T) {
	analyze := testenv.RequireCommand(t, "systemd-analyze")

	// The check can fail: a broken copy must draw complaints.
	broken := readUnit(t, "rivet-agent.service") + "\n[Service]\nFrobnicate=yes\nRestart=sometimes\n"
	if out := verify(t, analyze, broken, "rivet-agent.service"); !strings.Contains(out, "Frobnicate") {
		t.Fatalf("systemd-analyze verify did not flag an unknown key; output: %q", out)
	}

	for _, name := range []string{"rivet-agent.service", "rivet-coordinator.service"} {
		if out := verify(t, analyze, readUnit(t, name), name); out != "" {
			t.Errorf("systemd-analyze verify %s:\n%s", name, out)
		}
	}
}

// TestUnitsSayWhatTheDesignAsks pins the settings the rest of Rivet relies on.
func TestUnitsSayWhatTheDesignAsks(t *testing.T) {
	agent := readUnit(t, "rivet-agent.service")
	for _, want := range []string{
		"After=network-online.target docker.service", "Restart=always", "StateDirectory=rivet\n",
		"ExecStart=/usr/bin/rivet-agent run --mode=service",
	} {
		if !strings.Contains(agent, want) {
			t.Errorf("rivet-agent.service lacks %q", want)
		}
	}
	// Disk and docker access must survive the hardening.
	for _, never := range []string{"PrivateDevices=yes", "DevicePolicy=", "ProtectSystem=strict", "PrivateNetwork="} {
		if strings.Contains(agent, never) {
			t.Errorf("rivet-agent.service sets %q, which breaks disk, docker or gossip access", never)
		}
	}
	coord := readUnit(t, "rivet-coordinator.service")
	for _, want := range []string{
		"ExecStart=/usr/bin/rivet coordinator --data-dir /var/lib/rivet-coordinator",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE", "StateDirectory=rivet-coordinator", "Restart=always",
		"NoNewPrivileges=yes",
	} {
		if !strings.Contains(coord, want) {
			t.Errorf("rivet-coordinator.service lacks %q", want)
		}
	}
}
