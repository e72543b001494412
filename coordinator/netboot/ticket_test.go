package netboot

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
)

// issuer gives a ticket that names the MAC, so a test sees whose ticket a script
// carries; with fail set it fails, as the coordinator's would without a leader.
type issuer struct{ fail *atomic.Bool }

func (i issuer) IssueTicket(_ context.Context, mac net.HardwareAddr) (string, error) {
	if i.fail != nil && i.fail.Load() {
		return "", errors.New("no leader")
	}
	return "tk-" + strings.ReplaceAll(mac.String(), ":", ""), nil
}

func ticketOf(script string) string {
	for _, f := range strings.Fields(lineWith(script, "kernel ")) {
		if v, ok := strings.CutPrefix(f, "rivet.ticket="); ok {
			return v
		}
	}
	return ""
}

// Without a recent PXE exchange from the MAC, or from an address that is not that MAC's,
// the script carries no ticket, and each refusal is counted.
func TestScriptTicketOnlyForTheExpectedRequester(t *testing.T) {
	cfg := testConfig(t)
	cfg.Mode, cfg.Pool.Start, cfg.Pool.End = ModeFull, net.IPv4(10, 77, 0, 100), net.IPv4(10, 77, 0, 150)
	outcomes := map[string]int{}
	cfg.TicketEvent = func(o string) { outcomes[o]++ }
	s, ts := newHTTPServer(t, cfg)
	_, body := get(t, ts.URL+"/boot.ipxe?mac="+macAgent)
	if tk := ticketOf(string(body)); tk != "" || lineWith(string(body), "kernel ") == "" {
		t.Fatalf("a MAC never seen by DHCP got ticket %q:\n%s", tk, body)
	}
	// DHCP saw it, but it holds no lease on 127.0.0.1, where this request comes from.
	s.expect.saw(mustMAC(macAgent))
	if _, body = get(t, ts.URL+"/boot.ipxe?mac="+macAgent); ticketOf(string(body)) != "" {
		t.Fatalf("a request from another address got a ticket:\n%s", body)
	}
	if outcomes[TicketNotExpected] != 1 || outcomes[TicketWrongRequester] != 1 || outcomes[TicketIssued] != 0 {
		t.Fatalf("ticket outcomes %v", outcomes)
	}
}

// bootPair runs a Server in the server namespace of a fresh pair and returns a DHCP
// client in the client namespace.
func bootPair(t *testing.T, subnet byte, mutate func(*Config, *dhcptest.Pair)) (*Server, *dhcptest.Pair, *dhcptest.Client) {
	t.Helper()
	p := dhcptest.TestPair(t, "rvk", subnet)
	cfg := testConfig(t)
	cfg.ServerIP, cfg.BootURL, cfg.HTTPAddr, cfg.Interface = p.ServerIP, "", ":0", p.ServerIf
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	mutate(&cfg, p)
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dhcptest.Do(p.ServerNS, func() error { return s.Run(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	var c *dhcptest.Client
	if err := dhcptest.Do(p.ClientNS, func() (err error) { c, err = dhcptest.NewClient(p.ClientIf, nil, 68); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return s, p, c
}

// httpFrom dials from local address ip inside namespace ns.
func httpFrom(ns string, ip net.IP) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = dhcptest.Do(ns, func() error {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}}}
}

// Full mode: a real DISCOVER/REQUEST exchange leases an address; the script fetched from
// that address carries the MAC's ticket, from any other address it does not.
func TestTicketForTheLeaseHolderAfterARealDHCPExchange(t *testing.T) {
	var fail atomic.Bool
	var mu sync.Mutex
	outcomes := map[string]int{}
	s, p, c := bootPair(t, 31, func(cfg *Config, p *dhcptest.Pair) {
		cfg.Mode = ModeFull
		cfg.Pool = dhcp.Pool{Start: net.IPv4(10, 77, 31, 100), End: net.IPv4(10, 77, 31, 150)}
		cfg.Tickets = issuer{fail: &fail}
		cfg.TicketEvent = func(o string) { mu.Lock(); outcomes[o]++; mu.Unlock() }
	})
	mac := dhcptest.MAC(7)
	offer := exchange(t, c, dhcptest.Request{XID: 1, MAC: mac, Arch: 7, PXE: true, IPXE: true})
	ack := exchange(t, c, dhcptest.Request{XID: 2, MAC: mac, Arch: 7, PXE: true, IPXE: true,
		Type: dhcpv4.MessageTypeRequest, RequestedIP: offer.YourIPAddr, ServerID: p.ServerIP})
	if msg := ack.MessageType(); msg != dhcpv4.MessageTypeAck {
		t.Fatalf("REQUEST got %s", ack.Summary())
	}
	leased := ack.YourIPAddr
	if out, err := dhcptest.Exec(p.ClientNS, "ip", "addr", "add", leased.String()+"/24", "dev", p.ClientIf).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	script := fetch(t, httpFrom(p.ClientNS, leased), s.ScriptURL(mac))
	if tk := ticketOf(script); tk != "tk-525400000007" {
		t.Fatalf("script fetched from the lease %v: ticket %q\n%s", leased, tk, script)
	}
	if tk := ticketOf(fetch(t, httpFrom(p.ClientNS, p.ClientIP), s.ScriptURL(mac))); tk != "" {
		t.Fatalf("script for %v fetched from %v (not its lease): ticket %q", mac, p.ClientIP, tk)
	}
	if tk := ticketOf(fetch(t, httpFrom(p.ClientNS, leased), s.ScriptURL(dhcptest.MAC(8)))); tk != "" {
		t.Fatalf("script for a MAC DHCP never saw: ticket %q", tk)
	}
	// The issuer failing leaves the script ticketless; it still boots the agent.
	fail.Store(true)
	if script := fetch(t, httpFrom(p.ClientNS, leased), s.ScriptURL(mac)); ticketOf(script) != "" || lineWith(script, "kernel ") == "" {
		t.Fatalf("script while the issuer fails:\n%s", script)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{TicketIssued: 1, TicketWrongRequester: 1, TicketNotExpected: 1, TicketIssueFailed: 1}
	if !maps.Equal(outcomes, want) {
		t.Fatalf("ticket outcomes %v, want %v", outcomes, want)
	}
}

// Proxy mode: the requester's address must resolve to the MAC in the boot interface's
// neighbour table. A DISCOVER with a spoofed MAC does not get that MAC a ticket.
func TestTicketForTheNeighbourInProxyMode(t *testing.T) {
	s, p, c := bootPair(t, 32, func(cfg *Config, _ *dhcptest.Pair) { cfg.Mode = ModeProxy })
	var real net.HardwareAddr
	if err := dhcptest.Do(p.ClientNS, func() error {
		ifc, err := net.InterfaceByName(p.ClientIf)
		if err == nil {
			real = ifc.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	spoofed := dhcptest.MAC(9)
	exchange(t, c, dhcptest.Request{XID: 1, MAC: real, Arch: 7, PXE: true, IPXE: true})
	exchange(t, c, dhcptest.Request{XID: 2, MAC: spoofed, Arch: 7, PXE: true, IPXE: true})
	hc := httpFrom(p.ClientNS, p.ClientIP)
	want := "tk-" + strings.ReplaceAll(real.String(), ":", "")
	if tk := ticketOf(fetch(t, hc, s.ScriptURL(real))); tk != want {
		t.Fatalf("script for the client's own MAC: ticket %q, want %q", tk, want)
	}
	if tk := ticketOf(fetch(t, hc, s.ScriptURL(spoofed))); tk != "" {
		t.Fatalf("script for a MAC that is not the requester's: ticket %q", tk)
	}
}
