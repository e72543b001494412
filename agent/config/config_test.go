package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

const fp = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func load(t *testing.T, args []string, pid1 bool, cmdline string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	return f.Load(pid1, func() (shared.BootParams, error) { return shared.ParseCmdline(cmdline) })
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPrecedenceFlagsOverFileOverCmdline(t *testing.T) {
	file := writeFile(t, "agent.yaml", `
servers: [https://10.0.0.2:7443]
labels: {rack: r2, zone: z1}
poll_interval: 30s
state_dir: /srv/rivet
`)
	cmdline := "quiet rivet.url=https://10.0.0.1:7443 rivet.ca=" + fp +
		" rivet.token=cmdline-token rivet.labels=rack=r1,pool=gpu rivet.debug=1"
	cfg, err := load(t, []string{"--config", file, "--server", "https://10.0.0.3:7443",
		"--label", "zone=z9"}, true, cmdline)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mode != shared.ModeRAM {
		t.Errorf("mode %q, want ram as PID 1", cfg.Mode)
	}
	if got := strings.Join(cfg.Servers, ","); got != "https://10.0.0.3:7443" {
		t.Errorf("servers %q: the flag must win", got)
	}
	if cfg.CAFingerprint != fp || cfg.EnrolToken != "cmdline-token" {
		t.Errorf("cmdline values lost: ca %q token set %v", cfg.CAFingerprint, cfg.EnrolToken != "")
	}
	want := map[string]string{"rack": "r2", "zone": "z9", "pool": "gpu"}
	if len(cfg.Labels) != len(want) {
		t.Errorf("labels %v, want %v", cfg.Labels, want)
	}
	for k, v := range want {
		if cfg.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels merge by key, higher source wins)", k, cfg.Labels[k], v)
		}
	}
	if cfg.PollInterval.Std() != 30*time.Second || cfg.StateDir != "/srv/rivet" {
		t.Errorf("file values lost: poll %v state %q", cfg.PollInterval.Std(), cfg.StateDir)
	}
	if cfg.LogLevel != "debug" {
		t.Errorf("rivet.debug=1 gave log level %q", cfg.LogLevel)
	}
	if cfg.MetricsAddr != MetricsOff {
		t.Errorf("RAM mode metrics %q, want off by default", cfg.MetricsAddr)
	}
}

func TestServiceModeIgnoresCmdline(t *testing.T) {
	file := writeFile(t, "agent.yaml", "servers: [https://10.0.0.2:7443]\nca_fingerprint: "+fp+"\n")
	cfg, err := load(t, []string{"--config", file}, false, "rivet.url=https://10.9.9.9:1 rivet.token=nope")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mode != shared.ModeService || cfg.Servers[0] != "https://10.0.0.2:7443" || cfg.EnrolToken != "" {
		t.Errorf("service mode read the kernel command line: %+v", cfg)
	}
	if cfg.MetricsAddr != DefaultMetricsAddr || cfg.GossipBind != DefaultGossipBind ||
		cfg.StateDir != DefaultStateDir || cfg.PollInterval.Std() != DefaultPollInterval {
		t.Errorf("defaults not applied: %+v", cfg)
	}
}

func TestFileIsStrict(t *testing.T) {
	for name, text := range map[string]string{
		"unknown field":   "servers: [https://a:1]\nserver: https://b:1\n",
		"duplicate field": "mode: ram\nmode: service\n",
		"bad duration":    "poll_interval: soon\n",
		"not a mapping":   "- a\n- b\n",
	} {
		if _, err := ParseFile([]byte(text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMissingFiles(t *testing.T) {
	// The default file may be absent; a file named by --config may not.
	if _, err := load(t, []string{"--config", filepath.Join(t.TempDir(), "nope.yaml")}, false, ""); err == nil {
		t.Error("a missing --config file was accepted")
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	f := RegisterFlags(fs)
	f.file = filepath.Join(t.TempDir(), "default-absent.yaml") // stands in for the default path
	_ = fs.Parse([]string{"--server", "https://a:1", "--ca-fingerprint", fp})
	if _, err := f.Load(false, nil); err != nil {
		t.Errorf("absent default file: %v", err)
	}
}

func TestTokenFile(t *testing.T) {
	token := writeFile(t, "token", "  s3cret-enrol \n")
	cfg, err := load(t, []string{"--server", "https://a:1", "--ca-fingerprint", fp, "--token-file", token},
		true, "rivet.token=from-cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EnrolToken != "s3cret-enrol" {
		t.Errorf("token file not read (or cmdline token won): set=%v", cfg.EnrolToken != "")
	}
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "cfg", cfg)
	if strings.Contains(out.String(), "s3cret") || strings.Contains(cfg.String(), "s3cret") {
		t.Errorf("the token leaked into a log line: %s", out.String())
	}
	if _, err := load(t, []string{"--server", "https://a:1", "--ca-fingerprint", fp,
		"--token", "x", "--token-file", token}, false, ""); err == nil {
		t.Error("both --token and --token-file were accepted")
	}
	empty := writeFile(t, "empty", "\n")
	if _, err := load(t, []string{"--server", "https://a:1", "--ca-fingerprint", fp, "--token-file", empty}, false, ""); err == nil {
		t.Error("an empty token file was accepted")
	}
}

func TestValidationSaysWhatToFix(t *testing.T) {
	base := []string{"--server", "https://a:1", "--ca-fingerprint", fp}
	cases := map[string][]string{
		"no coordinator URL":  {"--ca-fingerprint", fp},
		"no CA fingerprint":   {"--server", "https://a:1"},
		"want ram or service": append(base, "--mode", "disk"),
		"absolute path":       append(base, "--state-dir", "rel/dir"),
		"system uuid":         append(base, "--system-uuid", "nope"),
		"gossip bind":         append(base, "--gossip-bind", "7946"),
		"gossip advertise":    append(base, "--gossip-advertise", "host.example"),
		"metrics addr":        append(base, "--metrics-addr", "9469"),
		"poll interval":       append(base, "--poll-interval", "10ms"),
		"log format":          append(base, "--log-format", "xml"),
		"log level":           append(base, "--log-level", "loud"),
	}
	for want, args := range cases {
		_, err := load(t, args, false, "")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: error %v, want one mentioning %q", args, err, want)
		}
	}
	if _, err := load(t, []string{"--label", "Bad Key=1"}, false, ""); err == nil {
		t.Error("a bad label was accepted")
	}
	_, err := load(t, nil, true, "rivet.url=ftp://x")
	if err == nil || !strings.Contains(err.Error(), "kernel command line") {
		t.Errorf("bad kernel command line: %v", err)
	}
	if cfg, err := load(t, append(base, "--metrics-addr", "off", "--system-uuid",
		"4C4C4544-0042-3510-8048-B4C04F564433"), false, ""); err != nil || cfg.MetricsAddr != MetricsOff {
		t.Errorf("valid config refused: %v", err)
	}
}

func TestReadCmdline(t *testing.T) {
	path := writeFile(t, "cmdline", "BOOT_IMAGE=/vmlinuz rivet.url=https://10.0.0.1:7443 rivet.ca="+fp+"\n")
	p, err := ReadCmdline(path)
	if err != nil || len(p.URLs) != 1 || p.CAFingerprint != fp {
		t.Errorf("ReadCmdline = %+v, %v", p, err)
	}
	if _, err := ReadCmdline(filepath.Join(t.TempDir(), "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent file: %v", err)
	}
}

// The example shipped in packaging/config must stay a valid config file.
func TestShippedExampleParses(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "packaging", "config", "agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseFile(data)
	if err != nil {
		t.Fatal(err)
	}
	c.Mode = shared.ModeService
	if err := c.Validate(); err != nil {
		t.Errorf("the example does not validate: %v", err)
	}
	if len(c.Servers) != 2 || c.EnrolTokenFile == "" || c.PollInterval.Std() != 15*time.Second {
		t.Errorf("the example was not read fully: %+v", c)
	}
}
