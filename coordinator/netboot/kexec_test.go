package netboot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentBootIsWhatTheScriptBoots: the kexec answer names the files the boot HTTP
// server serves, with their digests, and the agent's command line with a fresh ticket,
// as the iPXE script would; a missing file is an error, not an answer.
func TestAgentBootIsWhatTheScriptBoots(t *testing.T) {
	cfg := testConfig(t)
	s, ts := newHTTPServer(t, cfg)
	s.mu.Lock()
	s.baseURL = ts.URL // the files are fetched from where the test serves them
	s.mu.Unlock()
	k, err := s.AgentBoot(context.Background(), mustMAC(macAgent))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name   string
		url    string
		digest string
	}{{"vmlinuz", k.Kernel.URL, k.Kernel.SHA256}, {"initrd.zst", k.Initrd.URL, k.Initrd.SHA256}} {
		resp, err := http.Get(f.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want, _ := os.ReadFile(filepath.Join(cfg.BootDir, f.name))
		sum := sha256.Sum256(body)
		if resp.StatusCode != http.StatusOK || string(body) != string(want) || hex.EncodeToString(sum[:]) != f.digest {
			t.Fatalf("%s at %s: %s, %d bytes, digest as answered %v", f.name, f.url, resp.Status, len(body), hex.EncodeToString(sum[:]) == f.digest)
		}
	}
	for _, want := range []string{"rivet.ticket=", "BOOTIF=01-" + strings.ReplaceAll(macAgent, ":", "-"), "rivet.ca=" + testFingerprint, "panic=10"} {
		if !strings.Contains(k.Cmdline, want) {
			t.Errorf("command line %q lacks %q", k.Cmdline, want)
		}
	}
	if err := os.Remove(filepath.Join(cfg.BootDir, "vmlinuz")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AgentBoot(context.Background(), mustMAC(macAgent)); err == nil {
		t.Fatal("an answer without its kernel")
	}
}
