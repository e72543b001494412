package systemd

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
		"EnvironmentFile=-/etc/default/rivet-coordinator\n",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE", "StateDirectory=rivet-coordinator", "Restart=always",
		"NoNewPrivileges=yes",
	} {
		if !strings.Contains(coord, want) {
			t.Errorf("rivet-coordinator.service lacks %q", want)
		}
	}
}

// TestCoordinatorSettingsFile checks the settings file against the unit that reads it:
// every variable the command line uses is there (empty: the flag's default), nothing
// else is, and the shipped file gives the packaged boot directory and no interface.
func TestCoordinatorSettingsFile(t *testing.T) {
	unit, err := ParseUnit(readUnit(t, "rivet-coordinator.service"))
	if err != nil {
		t.Fatal(err)
	}
	if got := unit.Value("Service", "EnvironmentFile"); got != "-/etc/default/rivet-coordinator" {
		t.Fatalf("EnvironmentFile=%q", got)
	}
	env, err := ParseEnvironmentFile(readUnit(t, "rivet-coordinator.default"))
	if err != nil {
		t.Fatalf("rivet-coordinator.default: %v", err)
	}
	exec := unit.Value("Service", "ExecStart")
	for name, value := range env {
		if value != "" {
			t.Errorf("the shipped settings set %s=%q; every value ships empty (the flag's default)", name, value)
		}
		if !strings.Contains(exec, "${"+name+"}") && !strings.Contains(exec, "$"+name+" ") && !strings.HasSuffix(exec, "$"+name) {
			t.Errorf("the settings file sets %s, which ExecStart does not use", name)
		}
	}
	for _, ref := range regexp.MustCompile(`\$\{?([A-Z_]+)`).FindAllStringSubmatch(exec, -1) {
		if _, ok := env[ref[1]]; !ok {
			t.Errorf("ExecStart uses $%s, which the settings file does not document", ref[1])
		}
	}
	argv, err := Command(exec, env)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/usr/bin/rivet", "coordinator", "--data-dir", "/var/lib/rivet-coordinator",
		"--boot-dir", "/usr/lib/rivet/boot", "--advertise", "", "--boot-interface", "", "--boot-mode", "", "--boot-cmdline", ""}
	if !slices.Equal(argv, want) {
		t.Errorf("with the shipped settings the coordinator runs\n%q\nwant\n%q", argv, want)
	}
	env["RIVET_BOOT_INTERFACE"], env["RIVET_BOOT_CMDLINE"], env["RIVET_OPTS"] = "eth1", "console=ttyS1,115200n8 quiet", " --join  https://10.0.0.10:7443 "
	argv, err = Command(exec, env)
	if err != nil {
		t.Fatal(err)
	}
	want = slices.Concat(want[:9], []string{"eth1", "--boot-mode", "", "--boot-cmdline", "console=ttyS1,115200n8 quiet", "--join", "https://10.0.0.10:7443"})
	if !slices.Equal(argv, want) {
		t.Errorf("with an interface, a kernel line and a join the coordinator runs\n%q\nwant\n%q", argv, want)
	}
}

func TestCommandExpandsLikeSystemd(t *testing.T) {
	env := map[string]string{"ONE": "a b", "EMPTY": "", "OPTS": "  -x  1 "}
	for _, c := range []struct {
		line string
		want []string // nil: an error
	}{
		{"/bin/p ${ONE}", []string{"/bin/p", "a b"}},        // ${X}: one argument, spaces kept
		{"/bin/p $ONE", []string{"/bin/p", "a", "b"}},       // $X: split at whitespace
		{"/bin/p ${EMPTY} x", []string{"/bin/p", "", "x"}},  // an empty ${X} is still an argument
		{"/bin/p $EMPTY $UNSET x", []string{"/bin/p", "x"}}, // an empty $X is none
		{"/bin/p --o=${ONE}.${UNSET}", []string{"/bin/p", "--o=a b."}},
		{"/bin/p $OPTS", []string{"/bin/p", "-x", "1"}},
		{"/bin/p x$ONE", nil},         // systemd leaves it alone; refused rather than guessed
		{`/bin/p "quoted word"`, nil}, // quotes: not read here
		{"-/bin/p", nil},              // prefixes: not read here
		{"", nil},
	} {
		got, err := Command(c.line, env)
		if c.want == nil {
			if err == nil {
				t.Errorf("Command(%q) = %q, want an error", c.line, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("Command(%q) = %q, %v; want %q", c.line, got, err, c.want)
		}
	}
}

func TestParseEnvironmentFile(t *testing.T) {
	env, err := ParseEnvironmentFile("# comment\n; comment\n\nA=1\n B = two words \nC=\"quoted\"\nD='x y'\nE=\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "1", "B": "two words", "C": "quoted", "D": "x y", "E": ""}
	if !maps.Equal(env, want) {
		t.Errorf("got %q, want %q", env, want)
	}
	for _, bad := range []string{"NOEQUALS\n", "1X=2\n", "A=\"half\n", `A=back\slash` + "\n", "export A=1\n"} {
		if env, err := ParseEnvironmentFile(bad); err == nil {
			t.Errorf("ParseEnvironmentFile(%q) = %q, want an error", bad, env)
		}
	}
}

func TestParseUnitJoinsContinuations(t *testing.T) {
	u, err := ParseUnit("[Service]\n# c\nExecStart=/bin/p a \\\n\tb \\\n c\nX=1\nX=2\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Value("Service", "ExecStart"); got != "/bin/p a b c" {
		t.Errorf("ExecStart = %q", got)
	}
	if got := u.Value("Service", "X"); got != "2" {
		t.Errorf("X = %q, want the last value", got)
	}
	for _, bad := range []string{"X=1\n", "[Service\nX=1\n", "[Service]\nnot a setting\n"} {
		if _, err := ParseUnit(bad); err == nil {
			t.Errorf("ParseUnit(%q) succeeded", bad)
		}
	}
}

func FuzzParseEnvironmentFileAndCommand(f *testing.F) {
	f.Add("A=1\nB='x y'\n", "/bin/p ${A} $B")
	f.Add(readFileForFuzz(f, "rivet-coordinator.default"), "/usr/bin/rivet --advertise ${RIVET_ADVERTISE} $RIVET_OPTS")
	f.Fuzz(func(t *testing.T, envText, line string) {
		env, err := ParseEnvironmentFile(envText)
		if err != nil {
			return
		}
		for k := range env {
			if !envName.MatchString(k) {
				t.Fatalf("accepted the name %q", k)
			}
		}
		argv, err := Command(line, env)
		if err == nil && (len(argv) == 0 || !strings.HasPrefix(argv[0], "/")) {
			t.Fatalf("Command(%q) = %q without an error", line, argv)
		}
	})
}

func readFileForFuzz(f *testing.F, name string) string {
	data, err := os.ReadFile(name)
	if err != nil {
		f.Fatal(err)
	}
	return string(data)
}
