package cli

import (
	"flag"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/coordinator/netboot"
)

// The kernel makes the last console= on its command line /dev/console, where the agent
// as PID 1 prints and where a panic lands. With the default flags that must be the
// serial port: IPMI serial-over-LAN and qemu's -serial are what an operator watches.
func TestDefaultBootCmdlineEndsOnTheSerialConsole(t *testing.T) {
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	b := bootFlags(fs)
	if err := fs.Parse([]string{"--boot-interface", "eth0", "--boot-dir", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	cfg, err := b.config("10.232.70.1")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Mode, cfg.NoTFTP = netboot.ModeOff, true
	cfg.ServerIP = net.IPv4(10, 232, 70, 1)
	cfg.APIURLs = func() []string { return []string{"https://10.232.70.1:7443"} }
	cfg.CAFingerprint = func() string { return "" }
	srv, err := netboot.NewServer(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/boot.ipxe?mac=52:54:00:00:00:01", nil))
	script, _ := io.ReadAll(rec.Body)
	var last string
	for _, arg := range strings.Fields(string(script)) {
		if v, ok := strings.CutPrefix(arg, "console="); ok {
			last = v
		}
	}
	if !strings.HasPrefix(last, "ttyS0") {
		t.Fatalf("the last console= of the agent's kernel line is %q, want ttyS0; script:\n%s", last, script)
	}
}

// --boot-interface without --advertise would offer machines 127.0.0.1 as their boot
// server; the coordinator refuses to start and names the interface's addresses.
func TestBootInterfaceWithoutAdvertiseIsRefused(t *testing.T) {
	for _, advertise := range []string{"127.0.0.1", "0.0.0.0", "", "::1"} {
		fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
		b := bootFlags(fs)
		if err := fs.Parse([]string{"--boot-interface", "lo"}); err != nil {
			t.Fatal(err)
		}
		cfg, err := b.config(advertise)
		if err == nil || !strings.Contains(err.Error(), "--advertise") || !strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("--advertise %q: config %v, error %v; want a refusal with a hint", advertise, cfg, err)
		}
	}
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	b := bootFlags(fs)
	if cfg, err := b.config("127.0.0.1"); cfg != nil || err != nil {
		t.Errorf("boot services off: config %v, error %v; --advertise does not matter then", cfg, err)
	}
}
