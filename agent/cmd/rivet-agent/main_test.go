package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestEverySubcommandHasHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"run", "--help"}, {"inventory", "--help"}, {"bench", "inventory", "--help"},
		{"bench", "--help"}, {"version", "--help"},
	} {
		_, stderr, err := runCmd(t, args...)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%v: err %v, want flag.ErrHelp", args, err)
		}
		if !strings.Contains(stderr, "Usage: rivet-agent") {
			t.Errorf("%v: no usage text:\n%s", args, stderr)
		}
	}
	if _, stderr, _ := runCmd(t, "run", "--help"); !strings.Contains(stderr, "-ca-fingerprint") ||
		!strings.Contains(stderr, "Precedence: flags > config file > kernel command line") {
		t.Errorf("run --help lacks the flags or the precedence:\n%s", stderr)
	}
	if out, _, err := runCmd(t, "help"); err != nil || !strings.Contains(out, "bench inventory") {
		t.Errorf("help: %v\n%s", err, out)
	}
	if _, _, err := runCmd(t, "frobnicate"); err == nil {
		t.Error("an unknown command was accepted")
	}
}

func TestVersion(t *testing.T) {
	out, _, err := runCmd(t, "version")
	if err != nil || strings.TrimSpace(out) != "rivet-agent "+shared.Version {
		t.Errorf("version printed %q, %v", out, err)
	}
}

func TestRunWithoutConfigSaysWhatIsMissing(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := runCmd(t, "run", "--mode=service", "--config", empty)
	if err == nil || !strings.Contains(err.Error(), "no coordinator URL") {
		t.Errorf("run without a server: %v", err)
	}
	_, _, err = runCmd(t, "--mode=service", "--config", empty, "--server", "https://10.0.0.1:7443")
	if err == nil || !strings.Contains(err.Error(), "no CA fingerprint") {
		t.Errorf("run (default command) without a fingerprint: %v", err)
	}
}

func TestInventoryPrintsThisMachine(t *testing.T) {
	uuid := "6f1c2a5e-3b1d-4f7a-9c2e-8d4b5a6c7e8f"
	out, stderr, err := runCmd(t, "inventory", "--system-uuid", uuid)
	if err != nil {
		t.Fatalf("inventory: %v\n%s", err, stderr)
	}
	var inv shared.Inventory
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatalf("inventory output is not an Inventory: %v", err)
	}
	if err := inv.Validate(); err != nil {
		t.Errorf("inventory does not validate: %v", err)
	}
	if inv.System.UUID != uuid {
		t.Errorf("system uuid %q, want the override %q", inv.System.UUID, uuid)
	}
	id, err := shared.DeriveMachineID(&inv)
	if err != nil || !strings.Contains(stderr, string(id.ID)) {
		t.Errorf("stderr does not name the machine id %s: %q (%v)", id.ID, stderr, err)
	}
}
