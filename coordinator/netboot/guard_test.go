package netboot

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot/tftp"
)

// runServer runs s until the test ends and returns Run's error channel.
func runServer(t *testing.T, s *Server) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10 s of its context ending")
		}
	})
	return done
}

// waitBootURL waits until Run has opened its sockets and returns the boot URL.
func waitBootURL(t *testing.T, s *Server, done <-chan error) string {
	t.Helper()
	select {
	case <-s.Listening():
		return s.bootURL()
	case err := <-done:
		t.Fatalf("Run ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no sockets within 10 s")
	}
	return ""
}

// A socket that cannot be opened ends Run with an error that says what to do, not with
// a nil-pointer panic from closing what was never opened.
func TestRunReportsSocketsItCannotOpen(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for name, c := range map[string]struct {
		mutate func(*Config)
		want   string
	}{
		"HTTP port taken": {func(c *Config) { c.HTTPAddr = taken.Addr().String() }, "is the port taken"},
		"no such boot interface": {func(c *Config) {
			c.Mode, c.Interface, c.Pool.Start = ModeProxy, "rvnone0", nil
		}, `interface "rvnone0"`},
		"TFTP port taken": {func(c *Config) {
			c.NoTFTP, c.Ports.TFTP = false, taken.Addr().(*net.TCPAddr).Port
			udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.Ports.TFTP})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { udp.Close() })
		}, "is another TFTP server running"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ServerIP, cfg.BootURL, cfg.HTTPAddr = net.IPv4(127, 0, 0, 1), "", "127.0.0.1:0"
			c.mutate(&cfg)
			s, err := NewServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = s.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Run: %v, want an error saying %q", err, c.want)
			}
		})
	}
}

// HTTPAddr without a host listens on the ServerIP only, not on every interface.
func TestHTTPListensOnTheServerIPOnly(t *testing.T) {
	cfg := testConfig(t)
	cfg.ServerIP, cfg.BootURL, cfg.HTTPAddr = net.IPv4(127, 0, 0, 1), "", ":0"
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := waitBootURL(t, s, runServer(t, s))
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	if resp, body := get(t, base+"/boot/files/vmlinuz"); resp.StatusCode != 200 || len(body) != 1<<20 {
		t.Fatalf("on the server IP: %s, %d bytes", resp.Status, len(body))
	}
	// 127.0.0.2 is this host too: a wildcard listener would answer there.
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.2", port), 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("HTTP boot answers on 127.0.0.2:%s: it listens on every address", port)
	}
}

// A symlink in BootDir that leads out of it is not followed by HTTP boot.
func TestBootFileSymlinkOutOfBootDirIsRefused(t *testing.T) {
	cfg := testConfig(t)
	if err := os.Symlink("/etc/passwd", filepath.Join(cfg.BootDir, "passwd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("vmlinuz", filepath.Join(cfg.BootDir, "kernel-link")); err != nil {
		t.Fatal(err)
	}
	_, ts := newHTTPServer(t, cfg)
	if resp, body := get(t, ts.URL+"/boot/files/passwd"); resp.StatusCode != 404 || strings.Contains(string(body), "root:") {
		t.Fatalf("symlink to /etc/passwd: %s\n%.200s", resp.Status, body)
	}
	if resp, body := get(t, ts.URL+"/boot/files/kernel-link"); resp.StatusCode != 200 || len(body) != 1<<20 {
		t.Fatalf("symlink inside BootDir: %s, %d bytes", resp.Status, len(body))
	}
}

// TFTP serves the iPXE binaries and nothing else of BootDir (the kernel goes over HTTP).
func TestTFTPServesOnlyTheIPXEBinaries(t *testing.T) {
	cfg := testConfig(t)
	ipxe := []byte("iPXE binary")
	if err := os.WriteFile(filepath.Join(cfg.BootDir, "snponly.efi"), ipxe, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.ServerIP, cfg.BootURL, cfg.HTTPAddr = net.IPv4(127, 0, 0, 1), "", "127.0.0.1:0"
	cfg.NoTFTP, cfg.Ports.TFTP = false, freeUDPPort(t)
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitBootURL(t, s, runServer(t, s))
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Ports.TFTP))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got, err := tftp.Fetch(ctx, addr, "snponly.efi", tftp.FetchOptions{}); err != nil || string(got) != string(ipxe) {
		t.Fatalf("snponly.efi over TFTP: %q, %v", got, err)
	}
	for _, name := range []string{"vmlinuz", "initrd.zst"} {
		if got, err := tftp.Fetch(ctx, addr, name, tftp.FetchOptions{}); err == nil || len(got) > 0 {
			t.Errorf("%s over TFTP: %d bytes, %v; want file not found", name, len(got), err)
		}
	}
	if st := s.TFTPStats(); st.Errors["not_found"] != 2 {
		t.Errorf("TFTP stats %+v: want the 2 refusals counted as not found", st)
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
