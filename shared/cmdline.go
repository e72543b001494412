package shared

import (
	"fmt"
	"net/url"
	"strings"
)

// Kernel command-line keys the RAM agent reads (set by the coordinator's iPXE script).
const (
	CmdlineURL    = "rivet.url"    // coordinator API base URLs, comma-separated
	CmdlineCA     = "rivet.ca"     // CA fingerprint, "sha256:<hex>"
	CmdlineToken  = "rivet.token"  // enrolment token (service-mode hosts booted by hand)
	CmdlineTicket = "rivet.ticket" // one-time boot ticket bound to the booting MAC
	CmdlineLabels = "rivet.labels" // labels, "k=v,k=v"
	CmdlineDebug  = "rivet.debug"  // "1": verbose logs on the console
)

// BootParams is what the RAM agent learns from the kernel command line.
type BootParams struct {
	URLs          []string
	CAFingerprint string
	EnrolToken    string
	Ticket        string
	Labels        map[string]string
	Debug         bool
}

// ParseCmdline reads Rivet's keys from a kernel command line (the text of
// /proc/cmdline). Other keys are ignored; Rivet's keys must be well formed.
func ParseCmdline(cmdline string) (BootParams, error) {
	if len(cmdline) > 4096 {
		return BootParams{}, fmt.Errorf("kernel command line longer than 4096 bytes")
	}
	var p BootParams
	for _, field := range splitCmdline(cmdline) {
		key, value, _ := strings.Cut(field, "=")
		switch key {
		case CmdlineURL:
			for _, u := range strings.Split(value, ",") {
				parsed, err := url.Parse(u)
				if err != nil || (parsed.Scheme != "https" && parsed.Scheme != "http") || parsed.Host == "" {
					return BootParams{}, fmt.Errorf("%s: %q is not an http(s) URL", CmdlineURL, u)
				}
				p.URLs = append(p.URLs, strings.TrimRight(u, "/"))
			}
		case CmdlineCA:
			if err := ValidateFingerprint(value); err != nil {
				return BootParams{}, fmt.Errorf("%s: %w", CmdlineCA, err)
			}
			p.CAFingerprint = value
		case CmdlineToken:
			if value == "" || len(value) > 256 {
				return BootParams{}, fmt.Errorf("%s: want 1..256 bytes", CmdlineToken)
			}
			p.EnrolToken = value
		case CmdlineTicket:
			if err := ValidateTicket(value); err != nil {
				return BootParams{}, fmt.Errorf("%s: %w", CmdlineTicket, err)
			}
			p.Ticket = value
		case CmdlineLabels:
			labels, err := ParseLabels(value)
			if err != nil {
				return BootParams{}, fmt.Errorf("%s: %w", CmdlineLabels, err)
			}
			p.Labels = labels
		case CmdlineDebug:
			p.Debug = value == "1" || value == "true" || value == ""
		}
	}
	return p, nil
}

// splitCmdline splits on spaces, keeping double-quoted values whole, as the kernel does.
func splitCmdline(s string) []string {
	var fields []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case (r == ' ' || r == '\n' || r == '\t') && !quoted:
			if cur.Len() > 0 {
				fields = append(fields, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		fields = append(fields, cur.String())
	}
	return fields
}

// ParseLabels reads "k=v,k=v".
func ParseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	if s == "" {
		return labels, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("label %q: want key=value", kv)
		}
		if err := ValidateLabel(k, v); err != nil {
			return nil, err
		}
		labels[k] = v
	}
	if len(labels) > 64 {
		return nil, fmt.Errorf("at most 64 labels")
	}
	return labels, nil
}

// ValidateFingerprint checks "sha256:" and 64 lowercase hex digits.
func ValidateFingerprint(fp string) error {
	hexPart, ok := strings.CutPrefix(fp, "sha256:")
	if !ok || !sha256Pattern.MatchString(hexPart) {
		return fmt.Errorf("fingerprint %q: want sha256: and 64 lowercase hex digits", fp)
	}
	return nil
}
