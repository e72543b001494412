package netboot

import (
	"bytes"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

const testFingerprint = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var (
	macAgent = "52:54:00:00:00:01"
	macDisk  = "52:54:00:00:00:02"
	macNone  = "52:54:00:00:00:03"
)

func testConfig(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	for name, size := range map[string]int{"vmlinuz": 1 << 20, "initrd.zst": 3<<20 + 17} {
		b := make([]byte, size)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Config{
		ServerIP: net.IPv4(10, 77, 0, 1), BootURL: "http://10.77.0.1:8080", BootDir: dir,
		APIURLs:       func() []string { return []string{"https://10.77.0.1:7443", "https://10.77.0.2:7443"} },
		CAFingerprint: func() string { return testFingerprint },
		Tickets:       issuer{},
		Booter: dhcptest.NewBooter(map[string]shared.BootTarget{
			macDisk: shared.BootDisk, macNone: shared.BootNone,
		}),
		Mode: ModeOff, NoTFTP: true, Cmdline: "panic=10",
	}
}

func newHTTPServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestAgentScript(t *testing.T) {
	s, ts := newHTTPServer(t, testConfig(t))
	for _, path := range []string{
		"/boot.ipxe?mac=" + macAgent,
		"/boot/52-54-00-00-00-01.ipxe",
		"/boot/52:54:00:00:00:01.ipxe",
	} {
		resp, body := get(t, ts.URL+path)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("%s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		script := string(body)
		kernel := lineWith(script, "kernel ")
		for _, want := range []string{
			"kernel http://10.77.0.1:8080/boot/files/vmlinuz ",
			" initrd=initrd.zst ", // UEFI's EFI stub finds the initramfs by this name
			" console=ttyS0,115200n8",
			" BOOTIF=01-52-54-00-00-00-01",
			" rivet.url=https://10.77.0.1:7443,https://10.77.0.2:7443",
			" rivet.ca=" + testFingerprint,
			" panic=10",
		} {
			if !strings.Contains(kernel, want) {
				t.Errorf("%s: kernel line %q lacks %q", path, kernel, want)
			}
		}
		// No DHCP exchange from this MAC: no ticket (ticket_test.go), and never a token.
		if strings.Contains(kernel, "rivet.ticket") || strings.Contains(kernel, "rivet.token") {
			t.Errorf("%s: kernel line %q carries a credential", path, kernel)
		}
		if !strings.HasPrefix(script, "#!ipxe\n") || lineWith(script, "initrd http://10.77.0.1:8080/boot/files/initrd.zst") == "" ||
			lineWith(script, "boot ") == "" || !strings.HasSuffix(script, "exit 1\n") {
			t.Errorf("%s: script:\n%s", path, script)
		}
		// What the agent will parse out of its kernel command line.
		params, err := shared.ParseCmdline(strings.TrimSuffix(strings.TrimPrefix(kernel, "kernel "), " || goto failed"))
		if err != nil || len(params.URLs) != 2 || params.CAFingerprint != testFingerprint || params.EnrolToken != "" {
			t.Errorf("%s: agent would read %+v, %v", path, params, err)
		}
	}
	if want := "http://10.77.0.1:8080/boot/52-54-00-00-00-01.ipxe"; s.ScriptURL(mustMAC(macAgent)) != want {
		t.Errorf("ScriptURL %q, want %q", s.ScriptURL(mustMAC(macAgent)), want)
	}
}

func TestDiskAndRetiredScriptsExitWithFailure(t *testing.T) {
	_, ts := newHTTPServer(t, testConfig(t))
	for mac, comment := range map[string]string{macDisk: "installed", macNone: "retired"} {
		resp, body := get(t, ts.URL+"/boot.ipxe?mac="+mac)
		script := string(body)
		if resp.StatusCode != 200 {
			t.Errorf("%s: %s (never an HTTP error for a script path)", mac, resp.Status)
		}
		if !strings.HasPrefix(script, "#!ipxe\n") || !strings.Contains(script, comment) {
			t.Errorf("%s: script:\n%s", mac, script)
		}
		// UEFI only tries the next boot option (the disk) after a failure; BIOS does either way.
		if lastLine(script) != "exit 1" || strings.Contains(script, "kernel") || strings.Contains(script, "token") {
			t.Errorf("%s: want a script that only exits with failure, got:\n%s", mac, script)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q: a cached answer would outlive the machine's state", mac, resp.Header.Get("Cache-Control"))
		}
	}
}

func TestBadScriptRequestsStillGetAScript(t *testing.T) {
	_, ts := newHTTPServer(t, testConfig(t))
	for _, path := range []string{"/boot.ipxe", "/boot.ipxe?mac=nonsense", "/boot/$%7Bnet0%2Fmac%7D.ipxe"} {
		resp, body := get(t, ts.URL+path)
		if resp.StatusCode != 200 || lastLine(string(body)) != "exit 1" || strings.Contains(string(body), "kernel") {
			t.Errorf("%s: %s\n%s", path, resp.Status, body)
		}
		if strings.Count(string(body), "$") != 0 {
			t.Errorf("%s: echoed a $ that iPXE would expand:\n%s", path, body)
		}
	}
	if resp, _ := get(t, ts.URL+"/boot/vmlinuz"); resp.StatusCode != 404 {
		t.Errorf("/boot/vmlinuz is not a script path: %s", resp.Status)
	}
}

func TestUnsafeCmdlineValueIsRefused(t *testing.T) {
	cfg := testConfig(t)
	cfg.Cmdline = "rivet.debug=${net0/mac}"
	_, ts := newHTTPServer(t, cfg)
	_, body := get(t, ts.URL+"/boot.ipxe?mac="+macAgent)
	if strings.Contains(string(body), "kernel") || lastLine(string(body)) != "exit 1" || strings.Contains(string(body), "${net0") {
		t.Errorf("a kernel argument with a $ must not reach the script:\n%s", body)
	}
}

func TestBootFileRangeAndCaching(t *testing.T) {
	cfg := testConfig(t)
	_, ts := newHTTPServer(t, cfg)
	want, _ := os.ReadFile(filepath.Join(cfg.BootDir, "initrd.zst"))

	resp, body := get(t, ts.URL+"/boot/files/initrd.zst")
	if resp.StatusCode != 200 || !bytes.Equal(body, want) || resp.ContentLength != int64(len(want)) {
		t.Fatalf("full GET: %s, %d bytes, Content-Length %d", resp.Status, len(body), resp.ContentLength)
	}
	if resp.Header.Get("Accept-Ranges") != "bytes" || resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" {
		t.Errorf("headers %v", resp.Header)
	}

	resp, body = get(t, ts.URL+"/boot/files/initrd.zst", "Range", "bytes=1000000-1000099")
	if resp.StatusCode != 206 || !bytes.Equal(body, want[1000000:1000100]) {
		t.Errorf("range GET: %s, %d bytes", resp.Status, len(body))
	}
	if cr := resp.Header.Get("Content-Range"); cr != "bytes 1000000-1000099/3145745" {
		t.Errorf("Content-Range %q", cr)
	}
	// Resuming from the middle to the end.
	resp, body = get(t, ts.URL+"/boot/files/initrd.zst", "Range", "bytes=3000000-")
	if resp.StatusCode != 206 || !bytes.Equal(body, want[3000000:]) {
		t.Errorf("open range GET: %s, %d bytes", resp.Status, len(body))
	}

	etag := resp.Header.Get("ETag")
	if resp, _ := get(t, ts.URL+"/boot/files/initrd.zst", "If-None-Match", etag); resp.StatusCode != 304 {
		t.Errorf("revalidation with the ETag: %s, want 304", resp.Status)
	}
	// A rebuilt file gets a new ETag, so a cache never serves the old initramfs.
	if err := os.WriteFile(filepath.Join(cfg.BootDir, "initrd.zst"), []byte("rebuilt"), 0o644); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(t, ts.URL+"/boot/files/initrd.zst", "If-None-Match", etag); resp.StatusCode != 200 || string(body) != "rebuilt" {
		t.Errorf("after a rebuild: %s %q", resp.Status, body)
	}
}

func TestBootFileNames(t *testing.T) {
	cfg := testConfig(t)
	outside := filepath.Join(filepath.Dir(cfg.BootDir), "secret")
	os.WriteFile(outside, []byte("secret"), 0o600)
	t.Cleanup(func() { os.Remove(outside) })
	os.WriteFile(filepath.Join(cfg.BootDir, ".hidden"), []byte("x"), 0o600)
	os.Mkdir(filepath.Join(cfg.BootDir, "sub"), 0o755)
	_, ts := newHTTPServer(t, cfg)
	for path, code := range map[string]int{
		"/boot/files/..%2Fsecret":     400,
		"/boot/files/..%5Csecret":     400,
		"/boot/files/.hidden":         400,
		"/boot/files/sub":             404,
		"/boot/files/missing":         404,
		"/boot/files/%2E%2E%2Fsecret": 400,
	} {
		resp, body := get(t, ts.URL+path)
		if resp.StatusCode != code || bytes.Contains(body, []byte("secret")) && code != 400 {
			t.Errorf("%s: %s, want %d", path, resp.Status, code)
		}
		if bytes.Equal(body, []byte("secret")) {
			t.Errorf("%s: served a file outside BootDir", path)
		}
	}
}

func TestNewServerRejectsBadConfig(t *testing.T) {
	base := testConfig(t)
	for name, mutate := range map[string]func(*Config){
		"no server IP":     func(c *Config) { c.ServerIP = nil },
		"no boot dir":      func(c *Config) { c.BootDir = "" },
		"no URL source":    func(c *Config) { c.BootURL, c.HTTPAddr = "", "" },
		"no CA func":       func(c *Config) { c.CAFingerprint = nil },
		"bad mode":         func(c *Config) { c.Mode = "relay" },
		"kernel with path": func(c *Config) { c.Kernel = "../vmlinuz" },
		"bad HTTP addr":    func(c *Config) { c.BootURL, c.HTTPAddr = "", "8080" },
	} {
		cfg := base
		mutate(&cfg)
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("%s: NewServer accepted it", name)
		}
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func lineWith(script, prefix string) string {
	for _, l := range strings.Split(script, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func lastLine(script string) string {
	lines := strings.Split(strings.TrimRight(script, "\n"), "\n")
	return lines[len(lines)-1]
}

// A machine that boots the agent and, seconds later after its install, the disk must show
// both decisions in the log although the script log line is throttled per machine.
func TestChangedBootDecisionIsAlwaysLogged(t *testing.T) {
	var logs testenv.LogBuffer
	cfg := testConfig(t)
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	booter := dhcptest.NewBooter(map[string]shared.BootTarget{})
	cfg.Booter = booter
	_, ts := newHTTPServer(t, cfg)
	fetch := func() { get(t, ts.URL+"/boot.ipxe?mac="+macAgent) }
	fetch()
	fetch() // the same answer again: throttled
	booter.Set(macAgent, shared.BootDisk)
	fetch()
	count := func(target shared.BootTarget) int {
		return strings.Count(logs.String(), `"target":"`+string(target)+`"`)
	}
	if count(shared.BootAgent) != 1 || count(shared.BootDisk) != 1 {
		t.Fatalf("want one agent and one disk script line, got %d and %d:\n%s",
			count(shared.BootAgent), count(shared.BootDisk), logs.String())
	}
}
