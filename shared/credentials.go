package shared

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rivetmetal/rivet/internal/atomicfile"
)

// The keys of the operator credentials file (DATA_DIR/operator.env) and of the
// environment the CLI reads.
const (
	EnvServer        = "RIVET_SERVER"         // API URL(s), comma-separated
	EnvCAFingerprint = "RIVET_CA_FINGERPRINT" // sha256:... of the cluster CA
	EnvToken         = "RIVET_TOKEN"          // the admin (operator) token
	EnvEnrolToken    = "RIVET_ENROL_TOKEN"    // the default enrolment token
)

// credentialKeys are the keys a complete credentials file holds, in the order written.
var credentialKeys = []string{EnvServer, EnvCAFingerprint, EnvToken, EnvEnrolToken}

// OperatorCredentials is what the first coordinator of a cluster writes to
// DATA_DIR/operator.env: where the API is, how to check its certificate and the tokens
// of the cluster's first admin and enrolment. The file is KEY=VALUE lines with `#`
// comments, so that `source operator.env` works in a shell.
type OperatorCredentials struct {
	Servers       []string // RIVET_SERVER: https://host:port, one or more
	CAFingerprint string   // RIVET_CA_FINGERPRINT
	Token         string   // RIVET_TOKEN
	EnrolToken    string   // RIVET_ENROL_TOKEN
}

// ErrCredentialsIncomplete is what an *IncompleteCredentialsError matches with errors.Is.
var ErrCredentialsIncomplete = errors.New("operator credentials incomplete")

// IncompleteCredentialsError says which keys a credentials file lacks.
type IncompleteCredentialsError struct {
	Path    string
	Missing []string // in the order the writer writes them
}

func (e *IncompleteCredentialsError) Error() string {
	return fmt.Sprintf("%s is incomplete: no %s", e.Path, strings.Join(e.Missing, ", "))
}

// Is makes errors.Is(err, ErrCredentialsIncomplete) true.
func (e *IncompleteCredentialsError) Is(target error) bool { return target == ErrCredentialsIncomplete }

// WriteOperatorCredentials writes c to path, mode 0600, atomically: a reader sees the
// old file or the whole new one, never a part. Every field must be set, and no value may
// hold white space, quotes or other characters a shell would read differently.
func WriteOperatorCredentials(path string, c OperatorCredentials) error {
	vals := c.values()
	var b bytes.Buffer
	b.WriteString("# Rivet operator credentials for this cluster. Keep secret.\n")
	for _, k := range credentialKeys {
		v := vals[k]
		if v == "" {
			return fmt.Errorf("writing %s: no %s", path, k)
		}
		if !shellSafe(v) {
			return fmt.Errorf("writing %s: %s holds characters a shell would not read back", path, k) // not the value: it may be a secret
		}
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	if err := atomicfile.Write(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// ReadOperatorCredentials reads a credentials file. A file that cannot be read or has a
// line that is not KEY=VALUE is an error; keys it does not know are ignored. A file that
// lacks one of the keys a coordinator writes returns what it holds together with an
// *IncompleteCredentialsError naming the missing keys (errors.Is
// ErrCredentialsIncomplete), so a caller that needs only some of them can go on.
func ReadOperatorCredentials(path string) (OperatorCredentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return OperatorCredentials{}, err
	}
	defer f.Close()
	c, err := ParseOperatorCredentials(f)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	vals := c.values()
	var missing []string
	for _, k := range credentialKeys {
		if vals[k] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return c, &IncompleteCredentialsError{Path: path, Missing: missing}
	}
	return c, nil
}

// ParseOperatorCredentials reads KEY=VALUE lines as a shell would source them: blank
// lines and `#` comments are skipped, an `export ` prefix and quotes around a value are
// dropped. It requires no key; ReadOperatorCredentials says which are missing.
func ParseOperatorCredentials(r io.Reader) (OperatorCredentials, error) {
	var c OperatorCredentials
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return c, fmt.Errorf("line %d: want KEY=VALUE", n)
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		switch strings.TrimSpace(k) {
		case EnvServer:
			c.Servers = SplitServers(v)
		case EnvCAFingerprint:
			c.CAFingerprint = v
		case EnvToken:
			c.Token = v
		case EnvEnrolToken:
			c.EnrolToken = v
		}
	}
	return c, sc.Err()
}

// SplitServers splits a comma-separated list of API URLs, dropping empty entries.
func SplitServers(s string) []string {
	var urls []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

func (c OperatorCredentials) values() map[string]string {
	return map[string]string{
		EnvServer:        strings.Join(c.Servers, ","),
		EnvCAFingerprint: c.CAFingerprint,
		EnvToken:         c.Token,
		EnvEnrolToken:    c.EnrolToken,
	}
}

// shellSafe says whether a shell reads v back unchanged as the right side of KEY=v.
func shellSafe(v string) bool {
	for _, r := range v {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("-_.:/,+=@%[]", r)
		if !ok {
			return false
		}
	}
	return true
}
