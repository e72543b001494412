package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/rivetmetal/rivet/coordinator/netboot"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// bootHarness is the coordinator's boot services wired as runServices wires them (the
// metrics hooks of wireNetboot on a real registry, a real slog logger), running in a
// network namespace of a fresh pair, with a client socket in the other.
type bootHarness struct {
	srv    *netboot.Server
	reg    *prometheus.Registry
	logs   *testenv.LogBuffer
	pair   *dhcptest.Pair
	client *net.UDPConn
}

func startBootHarness(t testing.TB, subnet byte, mode string) *bootHarness {
	t.Helper()
	p := dhcptest.TestPair(t, "rvf", subnet)
	dir := t.TempDir()
	for name, size := range map[string]int{"undionly.kpxe": 70000, "snponly.efi": 200, "vmlinuz": 1000} {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte{0x90}, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := &bootHarness{reg: prometheus.NewRegistry(), logs: &testenv.LogBuffer{}, pair: p}
	nb := netboot.Config{Mode: mode, Interface: p.ServerIf, ServerIP: p.ServerIP, HTTPAddr: ":0", BootDir: dir,
		APIURLs:       func() []string { return []string{"https://" + p.ServerIP.String() + ":7443"} },
		CAFingerprint: func() string { return "sha256:" + strings.Repeat("ab", 32) },
		// The fuzzer sends from one address; the per-source limit would drop most inputs
		// before the handlers see them (TestBootFlood covers the limit).
		PerSource: -1,
		Logger:    slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mode == netboot.ModeFull {
		nb.Pool = dhcp.Pool{Start: net.IPv4(10, 77, subnet, 100), End: net.IPv4(10, 77, subnet, 110)}
	}
	(&metrics{reg: h.reg}).wireNetboot(&nb)
	var err error
	if h.srv, err = netboot.NewServer(nb); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dhcptest.Do(p.ServerNS, func() error { return h.srv.Run(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("boot services: %v", err)
		}
	})
	select {
	case <-h.srv.Listening():
	case err := <-done:
		t.Fatalf("boot services: %v", err)
	}
	if err := dhcptest.Do(p.ClientNS, func() (err error) {
		h.client, err = net.ListenUDP("udp4", &net.UDPAddr{IP: p.ClientIP})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.client.Close() })
	return h
}

// dhcpSeen and tftpSeen count the datagrams each service has accounted for.
func (h *bootHarness) dhcpSeen() uint64 {
	st := h.srv.DHCPStats()
	return st.Total() + st.Malformed + st.Dropped
}

func (h *bootHarness) tftpSeen() uint64 {
	st := h.srv.TFTPStats()
	return st.Requests + st.Errors["malformed"] + st.Errors["rate_limited"]
}

// tftpIdle reports whether every TFTP request has ended.
func (h *bootHarness) tftpIdle() bool {
	st := h.srv.TFTPStats()
	return st.Active == 0 && st.Completed+st.Failed == st.Requests
}

// deliver sends data to port of the server and waits until the service has dealt with
// it; TFTP transfers it starts are aborted by the client, as a firmware that lost
// interest would.
func (h *bootHarness) deliver(t testing.TB, data []byte, port int, seen func() uint64) {
	t.Helper()
	before := seen()
	if _, err := h.client.WriteToUDP(data, &net.UDPAddr{IP: h.pair.ServerIP, Port: port}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("the datagram to port %d dealt with", port), func() error {
		if seen() > before && h.tftpIdle() {
			return nil
		}
		h.client.SetReadDeadline(time.Now().Add(2 * time.Millisecond))
		n, from, err := h.client.ReadFromUDP(buf)
		if err == nil && n >= 2 && from.Port != port && (buf[1] == 3 || buf[1] == 6) { // DATA or OACK
			h.client.WriteToUDP([]byte{0, 5, 0, 0, 'n', 'o', 0}, from)
		}
		return fmt.Errorf("DHCP %+v, TFTP %+v", h.srv.DHCPStats(), h.srv.TFTPStats())
	})
}

// check asserts what must hold after any input: bounded series, a scrape that works,
// and log lines that are each one well-formed record.
func (h *bootHarness) check(t testing.TB) {
	t.Helper()
	if n := seriesCount(t, h.reg); n > maxBootSeries {
		t.Fatalf("%d boot series, more than the %d the label sets allow", n, maxBootSeries)
	}
	exposition(t, h.reg)
	for _, line := range strings.Split(strings.TrimSpace(h.logs.Take()), "\n") {
		if line == "" {
			continue
		}
		if !utf8.ValidString(line) || !json.Valid([]byte(line)) {
			t.Fatalf("log line is not one well-formed record: %q", line)
		}
	}
}

// exposition is what /metrics would serve from reg.
func exposition(t testing.TB, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatalf("encode %s: %v", mf.GetName(), err)
		}
	}
	return b.String()
}

// FuzzBootDHCP sends arbitrary datagrams to the DHCP (67) and proxyDHCP (4011) sockets
// of the boot services in proxy and full mode, through the coordinator's metrics wiring.
func FuzzBootDHCP(f *testing.F) {
	for _, r := range []dhcptest.Request{
		{XID: 1, Arch: 0, PXE: true},
		{XID: 2, Arch: 7, PXE: true, IPXE: true},
		{XID: 3, Arch: 16, HTTP: true},
		{XID: 4, Arch: 0x7fff, PXE: true},
		{XID: 5, Arch: -1},
	} {
		f.Add(r.Bytes(), uint8(0))
		f.Add(r.Bytes(), uint8(3))
	}
	f.Add([]byte("\x01\x01\x06\x00garbage"), uint8(1))
	harness := [2]*bootHarness{startBootHarness(f, 41, netboot.ModeProxy), startBootHarness(f, 42, netboot.ModeFull)}
	f.Fuzz(func(t *testing.T, data []byte, sel uint8) {
		h := harness[sel&1]
		port := dhcp.PortServer
		if sel&2 != 0 {
			port = dhcp.PortPXE
		}
		if len(data) > 1500 {
			data = data[:1501] // the service's own limit; bigger would only cost the fuzzer time
		}
		h.deliver(t, data, port, h.dhcpSeen)
		h.check(t)
	})
}

// FuzzBootTFTP sends arbitrary datagrams to the TFTP socket (69) of the boot services,
// through the coordinator's metrics wiring: file names that are not UTF-8, endless
// distinct names, options, other opcodes.
func FuzzBootTFTP(f *testing.F) {
	for _, seed := range []string{
		"\x00\x01\xff\x00octet\x00", // the name that panicked the coordinator
		"\x00\x01undionly.kpxe\x00octet\x00",
		"\x00\x01undionly.kpxe\x00octet\x00tsize\x000\x00blksize\x001468\x00",
		"\x00\x01vmlinuz\x00octet\x00",
		"\x00\x01../../etc/passwd\x00octet\x00",
		"\x00\x02x\x00octet\x00",
		"\x00\x04\x00\x01",
		"\x00\x05\x00\x01oops\x00",
	} {
		f.Add([]byte(seed))
	}
	h := startBootHarness(f, 43, netboot.ModeOff)
	f.Fuzz(func(t *testing.T, data []byte) {
		h.deliver(t, data, 69, h.tftpSeen)
		h.check(t)
	})
}
