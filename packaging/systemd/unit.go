// Package systemd holds Rivet's systemd units and the settings file of the coordinator's,
// and reads them the way systemd does, as far as these files need: the tests run a
// unit's command line exactly as the package ships it, without systemd.
//
// What it reads: [Section] headers, Key=Value lines with backslash continuations and
// comments; environment files of KEY=VALUE lines with optional whole-value quotes; a
// command line's ${VAR} (replaced in place, always one argument) and $VAR (a word of its
// own, split at whitespace into zero or more arguments). Anything else systemd would
// interpret (quoted words in a command line, escapes, specifiers) is refused with an
// error rather than read differently from systemd.
package systemd

import (
	"fmt"
	"regexp"
	"strings"
)

// Unit is a unit file's settings: section name, then key, then every value in order.
type Unit map[string]map[string][]string

// Value is the last value of key in section ("" if unset).
func (u Unit) Value(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// ParseUnit reads a unit file.
func ParseUnit(text string) (Unit, error) {
	u := Unit{}
	section := ""
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		n, line := i+1, strings.TrimSpace(lines[i])
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			line = strings.TrimSpace(strings.TrimSuffix(line, `\`)) + " " + strings.TrimSpace(lines[i])
		}
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") || len(line) < 3 {
				return nil, fmt.Errorf("line %d: bad section header %q", n, line)
			}
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || !unitKey.MatchString(key) {
			return nil, fmt.Errorf("line %d: want Key=Value, got %q", n, line)
		}
		if section == "" {
			return nil, fmt.Errorf("line %d: %s before any [Section]", n, key)
		}
		u[section][key] = append(u[section][key], strings.TrimSpace(value))
	}
	return u, nil
}

var (
	unitKey = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*$`)
	envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	varRef  = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
)

// ParseEnvironmentFile reads an EnvironmentFile=: KEY=VALUE lines, blank lines and
// comments (# or ;). A value wholly in single or double quotes loses them; a value
// with any other quote, or a backslash, is refused (systemd would unescape it).
func ParseEnvironmentFile(text string) (map[string]string, error) {
	env := map[string]string{}
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !ok || !envName.MatchString(key) {
			return nil, fmt.Errorf("line %d: want NAME=value, got %q", i+1, line)
		}
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		if strings.ContainsAny(value, `"'\`) {
			return nil, fmt.Errorf("line %d: %s: quotes inside a value or backslashes are not read here; write the value plainly", i+1, key)
		}
		env[key] = value
	}
	return env, nil
}

// Command expands an ExecStart= value into the program's arguments (argv[0] first),
// with env as the unit's environment; an unset variable is empty.
func Command(line string, env map[string]string) ([]string, error) {
	if strings.ContainsAny(line, `"'\`) {
		return nil, fmt.Errorf("command %q: quoted words and escapes are not read here", line)
	}
	var argv []string
	for _, word := range strings.Fields(line) {
		if name, ok := strings.CutPrefix(word, "$"); ok && envName.MatchString(name) {
			argv = append(argv, strings.Fields(env[name])...)
			continue
		}
		expanded := varRef.ReplaceAllStringFunc(word, func(ref string) string { return env[ref[2:len(ref)-1]] })
		if strings.Contains(varRef.ReplaceAllString(word, ""), "$") {
			return nil, fmt.Errorf("command word %q: a $ outside ${NAME} or a whole-word $NAME is not read here", word)
		}
		argv = append(argv, expanded)
	}
	if len(argv) == 0 || !strings.HasPrefix(argv[0], "/") {
		return nil, fmt.Errorf("command %q: want an absolute program path first (prefixes such as - or + are not read here)", line)
	}
	return argv, nil
}
