package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestJoinCredentialsComeFromFlagsEnvironmentOrFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tokenFile := write("token", "rvo_fromfile\n")
	envFile := write("operator.env", "RIVET_TOKEN=rvo_fromenvfile\nRIVET_CA_FINGERPRINT=sha256:envfile\n")
	t.Setenv("RIVET_TOKEN", "")
	t.Setenv("RIVET_CA_FINGERPRINT", "")
	for _, tt := range []struct {
		name      string
		j         joinFlags
		env       string
		token, fp string
	}{
		{"flag", joinFlags{token: "rvo_flag", envFile: envFile}, "rvo_env", "rvo_flag", "sha256:envfile"},
		{"token file", joinFlags{tokenFile: tokenFile, envFile: envFile}, "rvo_env", "rvo_fromfile", "sha256:envfile"},
		{"environment", joinFlags{envFile: envFile, caFingerprint: "sha256:flag"}, "rvo_env", "rvo_env", "sha256:flag"},
		{"env file", joinFlags{envFile: envFile}, "", "rvo_fromenvfile", "sha256:envfile"},
		{"none", joinFlags{}, "", "", ""},
	} {
		t.Setenv("RIVET_TOKEN", tt.env)
		token, fp, err := tt.j.credentials()
		if err != nil || token != tt.token || fp != tt.fp {
			t.Errorf("%s: %q, %q, %v; want %q, %q", tt.name, token, fp, err, tt.token, tt.fp)
		}
	}
	for _, bad := range []joinFlags{
		{token: "rvo_flag", tokenFile: tokenFile},
		{tokenFile: filepath.Join(dir, "missing")},
		{tokenFile: write("two", "rvo_a rvo_b\n")},
		{tokenFile: write("empty", "\n")},
		{envFile: filepath.Join(dir, "missing.env")},
	} {
		if token, _, err := bad.credentials(); err == nil {
			t.Errorf("%+v: accepted, token %q", bad, token)
		} else if regexp.MustCompile(`rvo_[a-z]`).MatchString(err.Error()) {
			t.Errorf("%+v: the error shows the token: %v", bad, err)
		}
	}
}
