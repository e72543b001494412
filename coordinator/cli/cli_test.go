package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/cli"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := cli.Run(context.Background(), args, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestCommandsAgainstACoordinator(t *testing.T) {
	c, envFile := startCoordinator(t, coordinator.DaemonConfig{})
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
	out, err = run(t, "members", "ls", "--env-file", envFile)
	if err != nil || !strings.Contains(out, "leader") {
		t.Fatalf("members: %v\n%s", err, out)
	}
	out, err = run(t, "machines", "show", string(ms[0].ID), "--env-file", envFile)
	if err != nil || !strings.Contains(out, "Timeline") || !strings.Contains(out, "registered") {
		t.Fatalf("machines show: %v\n%s", err, out)
	}
}

// TestShowCountsAndNamesNetworkCards: loopback (as agents before this one sent it) and
// bridges are no NICs; each NIC is shown with its device's name.
func TestShowCountsAndNamesNetworkCards(t *testing.T) {
	c, envFile := startCoordinator(t, coordinator.DaemonConfig{})
	req := coordinatortest.RegisterRequest(1)
	req.Inventory.NICs[0].Vendor, req.Inventory.NICs[0].Product = "Red Hat, Inc.", "Virtio 1.0 network device"
	req.Inventory.NICs = append(req.Inventory.NICs, shared.NIC{Name: "lo", Virtual: true, Link: true},
		shared.NIC{Name: "docker0", MAC: "02:42:ac:11:00:01", Virtual: true})
	resp, err := c.Client(c.EnrolToken).Register(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "machines", "show", string(resp.Machine.ID), "--env-file", envFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "1 NICs") {
		t.Errorf("show counts other than the one NIC:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^ +eth0 +52:54:\S+ +Red Hat, Inc\. Virtio 1\.0 network device +virtio_net +10000 Mb/s +up`).MatchString(out) {
		t.Errorf("no NIC line naming eth0's device:\n%s", out)
	}
	if regexp.MustCompile(`(?m)^ +(lo|docker0) `).MatchString(out) {
		t.Errorf("loopback or a bridge is listed as a NIC:\n%s", out)
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
	_, err = run(t, "plan", "show")
	if err == nil || !strings.Contains(err.Error(), "usage: rivet plan show MACHINE_ID") {
		t.Fatalf("plan show without a machine: %v", err)
	}
	_, err = run(t, "roles", "apply")
	if err == nil || !strings.Contains(err.Error(), "-f FILE") {
		t.Fatalf("roles apply without -f: %v", err)
	}
}

// TestHelpWalk reads `rivet --help`, then runs every command's --help and every verb's
// --help it lists (and those each command's own help lists): each must exist, succeed
// (exit 0) and print its own usage.
func TestHelpWalk(t *testing.T) {
	top, err := run(t, "--help")
	if err != nil {
		t.Fatalf("rivet --help: %v\n%s", err, top)
	}
	cmds := listedCommands(top)
	if len(cmds) < 10 || cmds["machines"] == nil || cmds["roles"] == nil {
		t.Fatalf("rivet --help lists %v:\n%s", cmds, top)
	}
	for cmd, verbs := range cmds {
		out, err := run(t, cmd, "--help")
		if err != nil || !strings.Contains(out, "Usage: rivet "+cmd) {
			t.Errorf("rivet %s --help: %v\n%s", cmd, err, out)
			continue
		}
		if own := helpVerbs(out); !slices.Equal(own, verbs) {
			t.Errorf("rivet --help lists %s's verbs as %q, `rivet %s --help` as %q", cmd, verbs, cmd, own)
			verbs = append(verbs, own...)
		}
		for _, verb := range verbs {
			out, err := run(t, cmd, verb, "--help")
			if err != nil || strings.Contains(out, "unknown verb") || !strings.Contains(out, "Usage: rivet "+cmd+" "+verb) {
				t.Errorf("rivet %s %s --help: %v\n%s", cmd, verb, err, out)
			}
		}
	}
}

// listedCommands maps each command of `rivet --help` to the verbs listed under it.
func listedCommands(help string) map[string][]string {
	_, section, _ := strings.Cut(help, "Commands:\n")
	section, _, _ = strings.Cut(section, "\n\n")
	cmds := map[string][]string{}
	last := ""
	for _, line := range strings.Split(section, "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0:
		case fields[0] == "verbs:":
			cmds[last] = strings.Fields(strings.ReplaceAll(strings.Join(fields[1:], " "), ",", ""))
		default:
			last = fields[0]
			cmds[last] = nil
		}
	}
	return cmds
}

// helpVerbs returns the verbs of a command's "Verbs:" section, in order.
func helpVerbs(help string) []string {
	_, section, ok := strings.Cut(help, "Verbs:\n")
	if !ok {
		return nil
	}
	var verbs []string
	for _, line := range strings.Split(strings.TrimSpace(section), "\n") {
		if fields := strings.Fields(line); len(fields) > 0 {
			verbs = append(verbs, fields[0])
		}
	}
	return verbs
}

// startCoordinator runs an in-process coordinator and writes an operator.env for it.
func startCoordinator(t *testing.T, dc coordinator.DaemonConfig) (*coordinatortest.InProcess, string) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := coordinatortest.StartInProcess(context.Background(), t.TempDir(), logger, dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	envFile := filepath.Join(t.TempDir(), "operator.env")
	if err := c.WriteCredentials(envFile); err != nil {
		t.Fatal(err)
	}
	return c, envFile
}

func TestJSONListsAreNeverNull(t *testing.T) {
	c, envFile := startCoordinator(t, coordinator.DaemonConfig{GossipAddr: "off"}) // no gossip: no Serf members
	noNulls(t, envFile, [][]string{
		{"machines", "ls"}, {"machines", "ls", "--state", "failed"}, {"roles", "ls"},
		{"tokens", "ls"}, {"members", "ls"}, {"members", "upgrade-check"}, {"roles", "apply", "-f", "../../packaging/config/roles.example.yaml", "--dry-run"},
	})
	out, _ := run(t, "machines", "ls", "--env-file", envFile, "--output", "json")
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("machines ls --output json on an empty fleet = %q, want []", out)
	}
	// A machine whose agent sent no PCI list (null on the wire).
	req := coordinatortest.RegisterRequest(1)
	req.Inventory.PCI = nil
	resp, err := c.Client(c.EnrolToken).Register(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	id := string(resp.Machine.ID)
	noNulls(t, envFile, [][]string{{"machines", "show", id}, {"machines", "events", id}, {"machines", "ls"}})
}

// noNulls runs each command with --output json and fails on a null in its answer.
func noNulls(t *testing.T, envFile string, cmds [][]string) {
	t.Helper()
	for _, args := range cmds {
		out, err := run(t, append(args, "--env-file", envFile, "--output", "json")...)
		if err != nil || !json.Valid([]byte(out)) {
			t.Errorf("rivet %s --output json: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		if strings.Contains(out, "null") {
			t.Errorf("rivet %s --output json prints null, want []:\n%s", strings.Join(args, " "), out)
		}
	}
}

// TestListSaysWhyMachinesAreNotPlanned: the table names each unmatched machine's reason
// by a mark, and the reason once under it, however many machines share it.
func TestListSaysWhyMachinesAreNotPlanned(t *testing.T) {
	c, envFile := startCoordinator(t, coordinator.DaemonConfig{})
	ctx := context.Background()
	const n = 12
	for i := range n {
		if _, err := c.Client(c.EnrolToken).Register(ctx, coordinatortest.RegisterRequest(i)); err != nil {
			t.Fatal(err)
		}
	}
	admin := c.Client(c.AdminToken)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ms, err := admin.Machines(ctx)
		if err != nil {
			t.Fatal(err)
		}
		told := 0
		for _, m := range ms {
			if m.Unmatched != "" {
				told++
			}
		}
		if told == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d machines were told why they are not planned", told, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := run(t, "machines", "ls", "--env-file", envFile)
	if err != nil {
		t.Fatal(err)
	}
	const reason = "no role matches: no roles are defined (rivet roles apply)"
	if got := strings.Count(out, reason); got != 1 {
		t.Errorf("the reason shows %d times, want once under the table:\n%s", got, out)
	}
	if !strings.Contains(out, "[1] "+reason+" (12 machines)") {
		t.Errorf("no footnote with the reason and its count:\n%s", out)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasSuffix(strings.TrimSpace(lines[0]), "NOTE") {
		t.Errorf("no NOTE column: %q", lines[0])
	}
	for _, l := range lines[1 : n+1] {
		if !strings.HasSuffix(strings.TrimSpace(l), "[1]") {
			t.Errorf("row without the reason's mark: %q", l)
		}
	}
	t.Logf("rivet machines ls:\n%s", out)
}

// TestCoordinatorHelpShowsNoToken: the admin token in the environment never shows in
// --help (it once did, as the flag's default).
func TestCoordinatorHelpShowsNoToken(t *testing.T) {
	const secret = "rvo_secret-admin-token-in-the-environment"
	t.Setenv("RIVET_TOKEN", secret)
	out, err := run(t, "coordinator", "--help")
	if err != nil || !strings.Contains(out, "-token-file") {
		t.Fatalf("coordinator --help: %v\n%s", err, out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("coordinator --help shows RIVET_TOKEN:\n%s", out)
	}
}

// TestTokenOnTheCommandLineWarns: --token still works, with a warning that names the
// safer ways and not the token.
func TestTokenOnTheCommandLineWarns(t *testing.T) {
	const secret = "rvo_secret-on-the-command-line"
	// A bad --memory-limit stops the coordinator right after the credentials are read.
	out, err := run(t, "coordinator", "--data-dir", t.TempDir(), "--token", secret, "--memory-limit", "lots")
	if err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Fatalf("coordinator with a bad --memory-limit: %v", err)
	}
	if !strings.Contains(out, "RIVET_TOKEN or --token-file") || strings.Contains(out, secret) {
		t.Errorf("want a warning naming RIVET_TOKEN and --token-file, without the token:\n%s", out)
	}
}

// TestCoordinatorJoinsWithATokenFile: a second coordinator joins with the admin token
// from --token-file, nothing secret on its command line.
func TestCoordinatorJoinsWithATokenFile(t *testing.T) {
	t.Setenv("RIVET_TOKEN", "")
	c, envFile := startCoordinator(t, coordinator.DaemonConfig{GossipAddr: "off"})
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	join := func(ctx context.Context, token string, logs io.Writer) error {
		if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		ports := freePorts(t, 2)
		return cli.Run(ctx, []string{"coordinator", "--data-dir", t.TempDir(), "--node-id", "second",
			"--api-addr", ports[0], "--raft-addr", ports[1], "--advertise", "127.0.0.1", "--gossip-addr", "off",
			"--fast-elections", "--join", c.URL, "--token-file", tokenFile, "--ca-fingerprint", c.Fingerprint}, logs, logs)
	}
	// An attacker's guess, and an enrolment token, are refused: nothing joins.
	for _, bad := range []string{"rvo_" + strings.Repeat("a", 43), c.EnrolToken} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := join(ctx, bad, io.Discard)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "RIVET_TOKEN or --token-file") || strings.Contains(err.Error(), bad) {
			t.Errorf("joining with a token that is not an admin's: %v, want a refusal that names the fix, not the token", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs testenv.LogBuffer
	go func() { done <- join(ctx, c.AdminToken, &logs) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := run(t, "members", "ls", "--env-file", envFile, "--output", "json")
		var m shared.Members
		if err == nil && json.Unmarshal([]byte(out), &m) == nil && len(m.Raft) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second coordinator never joined: %v\n%s\nits log:\n%s", err, out, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(logs.String(), c.AdminToken) {
		t.Error("the joining coordinator logged the admin token")
	}
}

func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		defer l.Close()
	}
	return addrs
}
