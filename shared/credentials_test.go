package shared

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var testCreds = OperatorCredentials{
	Servers:       []string{"https://10.0.0.1:8443", "https://[fd00::1]:8443"},
	CAFingerprint: "sha256:" + strings.Repeat("ab", 32),
	Token:         "rvo_0123abcd_" + strings.Repeat("f", 40),
	EnrolToken:    "rve_" + strings.Repeat("e", 40),
}

func TestOperatorCredentialsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "operator.env")
	if err := WriteOperatorCredentials(path, testCreds); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := ReadOperatorCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, testCreds) {
		t.Errorf("read back %+v, want %+v", got, testCreds)
	}
	// Writing again replaces the file whole.
	again := testCreds
	again.Servers = []string{"https://10.0.0.2:8443"}
	if err := WriteOperatorCredentials(path, again); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadOperatorCredentials(path); err != nil || !reflect.DeepEqual(got, again) {
		t.Errorf("after a second write: %+v, %v", got, err)
	}
}

// The file stays what operators `source`: a shell reads every value back unchanged.
func TestOperatorCredentialsSourceInAShell(t *testing.T) {
	path := filepath.Join(t.TempDir(), "operator.env")
	if err := WriteOperatorCredentials(path, testCreds); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", `. "$1" && printf '%s\n' "$RIVET_SERVER" "$RIVET_CA_FINGERPRINT" "$RIVET_TOKEN" "$RIVET_ENROL_TOKEN"`,
		"sh", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join(testCreds.Servers, ",") + "\n" + testCreds.CAFingerprint + "\n" +
		testCreds.Token + "\n" + testCreds.EnrolToken + "\n"
	if string(out) != want {
		t.Errorf("sh read\n%s\nwant\n%s", out, want)
	}
}

func TestOperatorCredentialsFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "operator.env")
	c := testCreds
	c.Servers = c.Servers[:1]
	if err := WriteOperatorCredentials(path, c); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "# Rivet operator credentials for this cluster. Keep secret.\n" +
		"RIVET_SERVER=" + c.Servers[0] + "\nRIVET_CA_FINGERPRINT=" + c.CAFingerprint +
		"\nRIVET_TOKEN=" + c.Token + "\nRIVET_ENROL_TOKEN=" + c.EnrolToken + "\n"
	if string(data) != want {
		t.Errorf("file:\n%s\nwant:\n%s", data, want)
	}
}

func TestWriteOperatorCredentialsRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]OperatorCredentials{
		"no server":       {CAFingerprint: "sha256:aa", Token: "rvo_a", EnrolToken: "rve_a"},
		"no token":        {Servers: []string{"https://h:1"}, CAFingerprint: "sha256:aa", EnrolToken: "rve_a"},
		"space in token":  {Servers: []string{"https://h:1"}, CAFingerprint: "sha256:aa", Token: "rvo a", EnrolToken: "rve_a"},
		"newline in a fp": {Servers: []string{"https://h:1"}, CAFingerprint: "sha256:aa\nX=1", Token: "rvo_a", EnrolToken: "rve_a"},
		"quote in a url":  {Servers: []string{`https://h:1"`}, CAFingerprint: "sha256:aa", Token: "rvo_a", EnrolToken: "rve_a"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := WriteOperatorCredentials(path, c); err == nil {
			t.Errorf("%s: written", name)
		} else if strings.Contains(err.Error(), "rvo") {
			t.Errorf("%s: the error shows the token: %v", name, err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s: a file was left: %v", name, err)
		}
	}
}

func TestReadOperatorCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(text string) string {
		p := filepath.Join(dir, "operator.env")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// As a shell reads it: comments, blank lines, export, quotes, unknown keys.
	got, err := ReadOperatorCredentials(write("# c\n\nexport RIVET_SERVER=\"https://a:1, https://b:2\"\n" +
		"RIVET_CA_FINGERPRINT='sha256:aa'\n  RIVET_TOKEN = rvo_x \nRIVET_ENROL_TOKEN=rve_y\nOTHER=1\n"))
	want := OperatorCredentials{Servers: []string{"https://a:1", "https://b:2"}, CAFingerprint: "sha256:aa",
		Token: "rvo_x", EnrolToken: "rve_y"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, %v; want %+v", got, err, want)
	}

	// Incomplete: what is there, and which keys are not.
	got, err = ReadOperatorCredentials(write("RIVET_TOKEN=rvo_x\nRIVET_CA_FINGERPRINT=sha256:aa\n"))
	var inc *IncompleteCredentialsError
	if !errors.As(err, &inc) || !errors.Is(err, ErrCredentialsIncomplete) {
		t.Fatalf("incomplete file: %v", err)
	}
	if !reflect.DeepEqual(inc.Missing, []string{EnvServer, EnvEnrolToken}) {
		t.Errorf("missing %v", inc.Missing)
	}
	if got.Token != "rvo_x" || got.CAFingerprint != "sha256:aa" {
		t.Errorf("an incomplete file returned %+v", got)
	}
	if msg := err.Error(); !strings.Contains(msg, "RIVET_SERVER, RIVET_ENROL_TOKEN") || strings.Contains(msg, "rvo_") {
		t.Errorf("error %q", msg)
	}

	// Not KEY=VALUE: the line is named, not its content.
	if _, err := ReadOperatorCredentials(write("RIVET_TOKEN=rvo_x\nrvo_secret\n")); err == nil ||
		!strings.Contains(err.Error(), "line 2") || strings.Contains(err.Error(), "rvo_secret") {
		t.Errorf("malformed line: %v", err)
	}

	// No file.
	if _, err := ReadOperatorCredentials(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParseOperatorCredentials(f *testing.F) {
	f.Add("# Rivet operator credentials for this cluster. Keep secret.\nRIVET_SERVER=https://10.0.0.1:8443\n" +
		"RIVET_CA_FINGERPRINT=sha256:ab\nRIVET_TOKEN=rvo_a_b\nRIVET_ENROL_TOKEN=rve_c\n")
	f.Add("export RIVET_SERVER='https://a:1,,https://b:2'\n\n#x=y\n")
	f.Add("RIVET_TOKEN\n")
	f.Add("=\n==\n RIVET_TOKEN=\"\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseOperatorCredentials(strings.NewReader(text))
		if err != nil {
			return
		}
		for _, u := range c.Servers {
			if u == "" || strings.Contains(u, ",") {
				t.Fatalf("server %q from %q", u, text)
			}
		}
		// What the writer accepts, the reader reads back the same.
		if c.Token == "" || c.CAFingerprint == "" || c.EnrolToken == "" || len(c.Servers) == 0 {
			return
		}
		path := filepath.Join(t.TempDir(), "operator.env")
		if WriteOperatorCredentials(path, c) != nil {
			return
		}
		back, err := ReadOperatorCredentials(path)
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Fatalf("wrote %+v, read %+v, %v", c, back, err)
		}
	})
}
