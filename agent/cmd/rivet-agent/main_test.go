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
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestHelpWalk reads the command list of `rivet-agent --help` and runs every listed
// command's --help: each must exist and print its own usage, never an unknown command.
func TestHelpWalk(t *testing.T) {
	for _, help := range []string{"--help", "-h", "help"} {
		out, _, err := runCmd(t, help)
		if err != nil || !strings.Contains(out, "Commands:") {
			t.Fatalf("rivet-agent %s: %v, want the command list:\n%s", help, err, out)
		}
	}
	out, _, _ := runCmd(t, "--help")
	cmds := listedCommands(out)
	if len(cmds) < 4 {
		t.Fatalf("rivet-agent --help lists %q, want run, inventory, bench inventory and version", cmds)
	}
	for _, c := range cmds {
		args := append(strings.Fields(c), "--help")
		_, stderr, err := runCmd(t, args...)
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Errorf("rivet-agent %s: %v (main exits 1)\n%s", strings.Join(args, " "), err, stderr)
		}
		if !strings.Contains(stderr, "Usage: rivet-agent "+c) || strings.Contains(stderr, "unknown") {
			t.Errorf("rivet-agent %s printed no usage of its own:\n%s", strings.Join(args, " "), stderr)
		}
	}
	if _, stderr, _ := runCmd(t, "run", "--help"); !strings.Contains(stderr, "-ca-fingerprint") ||
		!strings.Contains(stderr, "Precedence: flags > config file > kernel command line") {
		t.Errorf("run --help lacks the flags or the precedence:\n%s", stderr)
	}
	if _, _, err := runCmd(t, "frobnicate"); err == nil {
		t.Error("an unknown command was accepted")
	}
}

// listedCommands returns the commands of the usage's "Commands:" section: each line's
// text before the column of descriptions ("bench inventory" is one command).
func listedCommands(usage string) []string {
	_, section, _ := strings.Cut(usage, "Commands:\n")
	section, _, _ = strings.Cut(section, "\n\n")
	var cmds []string
	for _, line := range strings.Split(section, "\n") {
		name, _, ok := strings.Cut(strings.TrimSpace(line), "   ")
		if ok {
			cmds = append(cmds, strings.TrimSpace(name))
		}
	}
	return cmds
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

// TestTokenFlagWarns: an enrolment token given as --token still works, with a warning
// that ps shows it, and the warning does not repeat the token.
func TestTokenFlagWarns(t *testing.T) {
	const secret = "rve_secret-enrolment-token-on-the-command-line"
	empty := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--mode=service", "--config", empty, "--server", "https://127.0.0.1:1",
			"--ca-fingerprint", "sha256:" + strings.Repeat("0", 64), "--token", secret, "--state-dir", t.TempDir(),
			"--metrics-addr", "off", "--gossip-bind", "127.0.0.1:0"}, &logs, &logs)
	}()
	testenv.Eventually(t, 20*time.Second, "the warning that names --token-file", testenv.Holds(
		func() bool { return strings.Contains(logs.String(), "--token-file") }, logs.String))
	cancel()
	<-done
	if out := logs.String(); !strings.Contains(out, "--token shows the enrolment token") || strings.Contains(out, secret) {
		t.Errorf("want a warning about --token without the token:\n%s", out)
	}
}
