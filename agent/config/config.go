// Package config builds the agent's configuration from three sources. Precedence, highest
// first:
//
//  1. command-line flags (--server, --token, ...);
//  2. the YAML file (/etc/rivet/agent.yaml, or --config; unknown fields are errors);
//  3. in RAM mode only, the kernel command line (rivet.url, rivet.ca, rivet.token,
//     rivet.labels, rivet.debug), which the coordinator's iPXE script writes;
//
// and then the built-in defaults. A value set in a higher source replaces the lower one
// whole, except labels, which merge key by key (the higher source wins a key). An
// enrolment token given as a file counts as set in the source that names the file.
package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// Defaults.
const (
	DefaultFile         = "/etc/rivet/agent.yaml"
	DefaultStateDir     = "/var/lib/rivet"
	DefaultGossipBind   = "0.0.0.0:7946"
	DefaultMetricsAddr  = "127.0.0.1:9469"
	DefaultPollInterval = 15 * time.Second
	// MetricsOff as metrics_addr turns the metrics listener off.
	MetricsOff = "off"
)

// Config is the agent's resolved configuration. The same struct is the YAML file's
// schema (field names in snake_case) and one layer of the merge.
type Config struct {
	Mode           shared.AgentMode `json:"mode,omitempty"`
	Servers        []string         `json:"servers,omitempty"`        // coordinator API base URLs
	CAFingerprint  string           `json:"ca_fingerprint,omitempty"` // sha256:<hex> of the cluster CA
	EnrolToken     string           `json:"enrol_token,omitempty"`    // a secret: prefer enrol_token_file
	EnrolTokenFile string           `json:"enrol_token_file,omitempty"`
	// Ticket is the one-time boot ticket from the kernel command line (rivet.ticket=,
	// put there by the coordinator's iPXE script); never from a file. A secret.
	Ticket          string            `json:"-"`
	Labels          map[string]string `json:"labels,omitempty"`
	StateDir        string            `json:"state_dir,omitempty"`
	SystemUUID      string            `json:"system_uuid,omitempty"` // overrides a bogus DMI UUID
	DockerHost      string            `json:"docker_host,omitempty"` // the node's dockerd; default the local socket
	GossipBind      string            `json:"gossip_bind,omitempty"` // host:port
	GossipAdvertise string            `json:"gossip_advertise,omitempty"`
	MetricsAddr     string            `json:"metrics_addr,omitempty"` // host:port, or "off"
	PollInterval    Duration          `json:"poll_interval,omitempty"`
	LogFormat       string            `json:"log_format,omitempty"` // text or json
	LogLevel        string            `json:"log_level,omitempty"`  // debug, info, warn, error
}

// Duration is a time.Duration written as "15s" in YAML.
type Duration time.Duration

// UnmarshalJSON reads "15s" (or a number of nanoseconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("duration: want a string such as \"15s\"")
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %v", s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as "15s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Std returns the time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// defaults is the lowest layer; metrics listen only in service mode unless asked.
func defaults(mode shared.AgentMode) Config {
	c := Config{
		StateDir:     DefaultStateDir,
		GossipBind:   DefaultGossipBind,
		PollInterval: Duration(DefaultPollInterval),
		LogFormat:    "text",
		LogLevel:     "info",
		MetricsAddr:  MetricsOff,
	}
	if mode == shared.ModeService {
		c.MetricsAddr = DefaultMetricsAddr
	}
	return c
}

// fromCmdline turns the kernel command line into a layer.
func fromCmdline(p shared.BootParams) Config {
	c := Config{Servers: p.URLs, CAFingerprint: p.CAFingerprint, EnrolToken: p.EnrolToken, Ticket: p.Ticket, Labels: p.Labels}
	if p.Debug {
		c.LogLevel = "debug"
	}
	return c
}

// merge lays over on top of base: every field set in over wins; labels merge by key.
func merge(base, over Config) Config {
	out := base
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	if over.Mode != "" {
		out.Mode = over.Mode
	}
	if len(over.Servers) > 0 {
		out.Servers = append([]string(nil), over.Servers...)
	}
	set(&out.CAFingerprint, over.CAFingerprint)
	if over.EnrolToken != "" || over.EnrolTokenFile != "" {
		out.EnrolToken, out.EnrolTokenFile = over.EnrolToken, over.EnrolTokenFile
	}
	set(&out.Ticket, over.Ticket)
	if len(over.Labels) > 0 {
		merged := map[string]string{}
		for k, v := range base.Labels {
			merged[k] = v
		}
		for k, v := range over.Labels {
			merged[k] = v
		}
		out.Labels = merged
	}
	set(&out.StateDir, over.StateDir)
	set(&out.SystemUUID, over.SystemUUID)
	set(&out.DockerHost, over.DockerHost)
	set(&out.GossipBind, over.GossipBind)
	set(&out.GossipAdvertise, over.GossipAdvertise)
	set(&out.MetricsAddr, over.MetricsAddr)
	if over.PollInterval != 0 {
		out.PollInterval = over.PollInterval
	}
	set(&out.LogFormat, over.LogFormat)
	set(&out.LogLevel, over.LogLevel)
	return out
}

// Validate checks the resolved configuration and says how to fix what is wrong. An
// empty enrolment token is allowed: a machine token kept in the state dir may do.
func (c *Config) Validate() error {
	if err := c.Mode.Validate(); err != nil {
		return fmt.Errorf("%w (--mode)", err)
	}
	if len(c.Servers) == 0 {
		return fmt.Errorf("no coordinator URL: set --server, servers: in %s, or rivet.url= on the kernel command line", DefaultFile)
	}
	for _, s := range c.Servers {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("coordinator URL %q: want https://host:port", s)
		}
	}
	if c.CAFingerprint == "" {
		return fmt.Errorf("no CA fingerprint: set --ca-fingerprint, ca_fingerprint: in %s, or rivet.ca= "+
			"(rivet coordinator prints it at start)", DefaultFile)
	}
	if err := shared.ValidateFingerprint(c.CAFingerprint); err != nil {
		return err
	}
	if c.EnrolToken != "" && c.EnrolTokenFile != "" {
		return fmt.Errorf("give the enrolment token or a token file, not both")
	}
	if len(c.EnrolToken) > 256 {
		return fmt.Errorf("enrolment token longer than 256 bytes")
	}
	for k, v := range c.Labels {
		if err := shared.ValidateLabel(k, v); err != nil {
			return err
		}
	}
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state dir %q: want an absolute path", c.StateDir)
	}
	if c.SystemUUID != "" && !uuidLike(c.SystemUUID) {
		return fmt.Errorf("system uuid %q: want 8-4-4-4-12 hex digits", c.SystemUUID)
	}
	if _, _, err := net.SplitHostPort(c.GossipBind); err != nil {
		return fmt.Errorf("gossip bind %q: want host:port, e.g. 0.0.0.0:7946", c.GossipBind)
	}
	if a := c.GossipAdvertise; a != "" && net.ParseIP(a) == nil {
		if host, _, err := net.SplitHostPort(a); err != nil || net.ParseIP(host) == nil {
			return fmt.Errorf("gossip advertise %q: want an IP or ip:port", a)
		}
	}
	if c.MetricsAddr != MetricsOff {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("metrics addr %q: want host:port or %q", c.MetricsAddr, MetricsOff)
		}
	}
	if p := c.PollInterval.Std(); p < time.Second || p > time.Hour {
		return fmt.Errorf("poll interval %v: want between 1s and 1h", p)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log format %q: want text or json", c.LogFormat)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("log level %q: want debug, info, warn or error", c.LogLevel)
	}
	return nil
}

func uuidLike(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range strings.ToLower(s) {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if r != '-' {
				return false
			}
			continue
		}
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

// Level returns the slog level (Validate has checked it).
func (c *Config) Level() slog.Level {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.LogLevel))
	return lvl
}

// LogValue prints the configuration with the secret left out, so that logging a Config
// never leaks the enrolment token.
func (c Config) LogValue() slog.Value {
	token := "none"
	switch {
	case c.EnrolToken != "":
		token = "set"
	case c.EnrolTokenFile != "":
		token = "file " + c.EnrolTokenFile
	}
	return slog.GroupValue(
		slog.String("mode", string(c.Mode)),
		slog.Any("servers", c.Servers),
		slog.String("ca_fingerprint", c.CAFingerprint),
		slog.String("enrol_token", token),
		slog.Bool("boot_ticket", c.Ticket != ""),
		slog.Any("labels", c.Labels),
		slog.String("state_dir", c.StateDir),
		slog.String("gossip_bind", c.GossipBind),
		slog.String("gossip_advertise", c.GossipAdvertise),
		slog.String("metrics_addr", c.MetricsAddr),
		slog.Duration("poll_interval", c.PollInterval.Std()),
	)
}

// String is LogValue for fmt: never the token.
func (c Config) String() string { return c.LogValue().String() }
