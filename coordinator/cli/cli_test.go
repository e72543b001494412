package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/cli"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/shared"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := cli.Run(context.Background(), args, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestCommandsAgainstACoordinator(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := coordinatortest.StartInProcess(context.Background(), t.TempDir(), logger, coordinator.DaemonConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	envFile := filepath.Join(t.TempDir(), "operator.env")
	env := "RIVET_SERVER=" + c.URL + "\nRIVET_CA_FINGERPRINT=" + c.Fingerprint + "\nRIVET_TOKEN=" + c.AdminToken + "\n"
	if err := os.WriteFile(envFile, []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client(c.EnrolToken).Register(context.Background(), coordinatortest.RegisterRequest(1)); err != nil {
		t.Fatal(err)
	}

	out, err := run(t, "machines", "ls", "--env-file", envFile)
	if err != nil || !strings.Contains(out, "discovered") || !strings.Contains(out, "1 machines") {
		t.Fatalf("machines ls: %v\n%s", err, out)
	}
	out, err = run(t, "machines", "ls", "--env-file", envFile, "--output", "json")
	var ms []shared.MachineSummary
	if err != nil || json.Unmarshal([]byte(out), &ms) != nil || len(ms) != 1 {
		t.Fatalf("machines ls --output json: %v\n%s", err, out)
	}
	out, err = run(t, "roles", "apply", "-f", "../../packaging/config/roles.example.yaml", "--dry-run", "--env-file", envFile)
	if err != nil || !strings.Contains(out, "dry run, nothing changed") || !strings.Contains(out, "no role matches") {
		t.Fatalf("roles apply --dry-run: %v\n%s", err, out)
	}
	if roles, _ := c.Client(c.AdminToken).Roles(context.Background()); len(roles) != 0 {
		t.Fatal("a dry run stored roles")
	}
	out, err = run(t, "tokens", "create", "--name", "alice", "--role", "viewer", "--env-file", envFile)
	if err != nil || !strings.Contains(out, "rvo_") || !strings.Contains(out, "shown only now") {
		t.Fatalf("tokens create: %v\n%s", err, out)
	}
	out, err = run(t, "members", "--env-file", envFile)
	if err != nil || !strings.Contains(out, "leader") {
		t.Fatalf("members: %v\n%s", err, out)
	}
	out, err = run(t, "machines", "show", string(ms[0].ID), "--env-file", envFile)
	if err != nil || !strings.Contains(out, "Timeline") || !strings.Contains(out, "registered") {
		t.Fatalf("machines show: %v\n%s", err, out)
	}
}

func TestErrorsSayWhatToDoNext(t *testing.T) {
	t.Setenv("RIVET_SERVER", "")
	t.Setenv("RIVET_ENV_FILE", "")
	_, err := run(t, "machines", "ls")
	if err == nil || !strings.Contains(err.Error(), "RIVET_SERVER") {
		t.Fatalf("no server: %v, want a hint naming RIVET_SERVER", err)
	}
	_, err = run(t, "machines", "frobnicate")
	if err == nil || !strings.Contains(err.Error(), "rivet machines --help") {
		t.Fatalf("unknown verb: %v", err)
	}
	_, err = run(t, "roles", "apply")
	if err == nil || !strings.Contains(err.Error(), "-f FILE") {
		t.Fatalf("roles apply without -f: %v", err)
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"coordinator", "--help"}, {"machines", "--help"}, {"machines", "ls", "--help"},
		{"roles", "apply", "--help"}, {"tokens", "create", "--help"}, {"members", "--help"}, {"bench", "--help"}, {"lab", "--help"}} {
		out, err := run(t, args...)
		if err != nil || !strings.Contains(out, "Usage") {
			t.Errorf("rivet %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
