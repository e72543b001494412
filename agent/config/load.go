package config

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/rivetmetal/rivet/shared"
)

// Flags are the agent's configuration flags, registered on a FlagSet.
type Flags struct {
	fs    *flag.FlagSet
	layer Config
	file  string
}

// RegisterFlags adds the configuration flags to fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	fs.StringVar(&f.file, "config", DefaultFile, "YAML config file (a missing default file is fine)")
	fs.StringVar((*string)(&f.layer.Mode), "mode", "", "ram or service (default: ram when PID 1, else service)")
	fs.Var((*listFlag)(&f.layer.Servers), "server", "coordinator API URL, e.g. https://10.0.0.1:7443 (repeat or comma-separate)")
	fs.StringVar(&f.layer.CAFingerprint, "ca-fingerprint", "", "sha256:<hex> of the cluster CA certificate")
	fs.StringVar(&f.layer.EnrolToken, "token", "", "enrolment token (prefer --token-file: flags show in ps)")
	fs.StringVar(&f.layer.EnrolTokenFile, "token-file", "", "file holding the enrolment token")
	fs.Var((*labelFlag)(&f.layer.Labels), "label", "label key=value for role selectors (repeatable)")
	fs.StringVar(&f.layer.StateDir, "state-dir", "", "where the machine token is kept (default "+DefaultStateDir+")")
	fs.StringVar(&f.layer.DockerHost, "docker-host", "", "the node's dockerd for the swarm step (default unix:///var/run/docker.sock)")
	fs.StringVar(&f.layer.SystemUUID, "system-uuid", "", "use this system UUID instead of the firmware's (boards with a bogus DMI UUID)")
	fs.StringVar(&f.layer.GossipBind, "gossip-bind", "", "gossip listen host:port (default "+DefaultGossipBind+")")
	fs.StringVar(&f.layer.GossipAdvertise, "gossip-advertise", "", "IP (or ip:port) the coordinators reach this agent at (default: the address facing the coordinator)")
	fs.StringVar(&f.layer.MetricsAddr, "metrics-addr", "", "Prometheus listen host:port, or off (default "+DefaultMetricsAddr+" in service mode, off in RAM mode)")
	fs.Var((*durationFlag)(&f.layer.PollInterval), "poll-interval", "how often to poll the plan without a nudge (default 15s)")
	fs.StringVar(&f.layer.LogFormat, "log-format", "", "text or json (default text)")
	fs.StringVar(&f.layer.LogLevel, "log-level", "", "debug, info, warn or error (default info)")
	return f
}

// TokenOnCommandLine reports whether the enrolment token came as --token, which every
// user of the host sees in ps.
func (f *Flags) TokenOnCommandLine() bool {
	return f.layer.EnrolToken != ""
}

// Load resolves the configuration after the FlagSet was parsed. pid1 picks RAM mode
// when neither a flag nor the file names the mode. cmdline is called only in RAM mode
// and returns the parsed kernel command line (boot.Prepare's, or ReadCmdline's).
func (f *Flags) Load(pid1 bool, cmdline func() (shared.BootParams, error)) (Config, error) {
	file, err := f.readFile()
	if err != nil {
		return Config{}, err
	}
	mode := f.layer.Mode
	if mode == "" {
		mode = file.Mode
	}
	if mode == "" {
		mode = shared.ModeService
		if pid1 {
			mode = shared.ModeRAM
		}
	}
	cfg := defaults(mode)
	if mode == shared.ModeRAM && cmdline != nil {
		params, err := cmdline()
		if err != nil {
			return Config{}, fmt.Errorf("kernel command line: %w", err)
		}
		cfg = merge(cfg, fromCmdline(params))
	}
	if err := checkTokenSource(file, "the config file"); err != nil {
		return Config{}, err
	}
	if err := checkTokenSource(f.layer, "flags"); err != nil {
		return Config{}, err
	}
	cfg = merge(cfg, file)
	cfg = merge(cfg, f.layer)
	cfg.Mode = mode
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	if cfg.EnrolTokenFile != "" {
		token, err := readToken(cfg.EnrolTokenFile)
		if err != nil {
			return Config{}, err
		}
		cfg.EnrolToken = token
	}
	return cfg, nil
}

func checkTokenSource(c Config, where string) error {
	if c.EnrolToken != "" && c.EnrolTokenFile != "" {
		return fmt.Errorf("%s give both an enrolment token and a token file: keep one", where)
	}
	return nil
}

// readFile reads the YAML layer. The default file may be missing; a named one may not.
func (f *Flags) readFile() (Config, error) {
	explicit := false
	f.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "config" {
			explicit = true
		}
	})
	data, err := os.ReadFile(f.file)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return Config{}, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("config file: %w", err)
	}
	return ParseFile(data)
}

// ParseFile decodes a YAML config file strictly: unknown or duplicate fields are errors.
func ParseFile(data []byte) (Config, error) {
	if len(data) > shared.MaxSmallBody {
		return Config{}, fmt.Errorf("config file is larger than %d bytes", shared.MaxSmallBody)
	}
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return Config{}, fmt.Errorf("config file: %w (see packaging/config/agent.yaml for the fields)", err)
	}
	return c, nil
}

func readToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("enrolment token file: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" || len(token) > 256 || strings.ContainsAny(token, " \n\t") {
		return "", fmt.Errorf("enrolment token file %s: want one token of 1..256 bytes", path)
	}
	return token, nil
}

// ReadCmdline parses Rivet's keys from a kernel command line file (/proc/cmdline), for
// RAM mode when the agent is not PID 1 and boot.Prepare did not run.
func ReadCmdline(path string) (shared.BootParams, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return shared.BootParams{}, err
	}
	return shared.ParseCmdline(string(data))
}

// listFlag collects repeated or comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// labelFlag collects key=value labels.
type labelFlag map[string]string

func (l *labelFlag) String() string {
	var parts []string
	for k, v := range *l {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (l *labelFlag) Set(v string) error {
	labels, err := shared.ParseLabels(v)
	if err != nil {
		return err
	}
	if *l == nil {
		*l = map[string]string{}
	}
	for k, val := range labels {
		(*l)[k] = val
	}
	return nil
}

type durationFlag Duration

func (d *durationFlag) String() string { return Duration(*d).Std().String() }

func (d *durationFlag) Set(v string) error {
	p, err := time.ParseDuration(v)
	if err != nil {
		return err
	}
	*d = durationFlag(p)
	return nil
}

// InstalledFile renders the config the agent of the OS installed on this machine runs
// with: service mode, the same coordinators, CA and labels (so role selectors match the
// same way), and no enrolment token — the handoff gives that agent the machine token.
// The result parses with ParseFile.
func (c Config) InstalledFile() ([]byte, error) {
	out := Config{Servers: c.Servers, CAFingerprint: c.CAFingerprint, Labels: c.Labels,
		SystemUUID: c.SystemUUID, LogFormat: c.LogFormat, LogLevel: c.LogLevel}
	body, err := yaml.Marshal(out)
	if err != nil {
		return nil, err
	}
	header := "# Written by the Rivet RAM agent's handoff step at install time. Fields: see\n" +
		"# /etc/rivet/agent.yaml.example. The machine token is in " + DefaultStateDir + ".\n"
	return append([]byte(header), body...), nil
}
