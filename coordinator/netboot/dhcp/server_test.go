package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// serveIn runs s.ListenAndServe inside the pair's server namespace until the test ends.
func serveIn(t *testing.T, p *dhcptest.Pair, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dhcptest.Do(p.ServerNS, func() error { return s.ListenAndServe(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
}

func clientIn(t *testing.T, p *dhcptest.Pair, ip net.IP) *dhcptest.Client {
	t.Helper()
	var c *dhcptest.Client
	err := dhcptest.Do(p.ClientNS, func() (err error) {
		c, err = dhcptest.NewClient(p.ClientIf, ip, PortClient)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends r until a reply comes (the server may still be binding its sockets).
func exchange(t *testing.T, c *dhcptest.Client, r dhcptest.Request, to *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	t.Helper()
	var (
		p    *dhcpv4.DHCPv4
		from *net.UDPAddr
	)
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("a reply to xid %#x", r.XID), func() (err error) {
		if err := c.Send(r.Bytes(), to); err != nil {
			t.Fatal(err)
		}
		p, from, err = c.Receive(r.XID, 300*time.Millisecond)
		return err
	})
	return p, from
}

// expectSilence sends r, waits until the server has counted it as ignored, then proves
// with a control request that no reply to r arrived before the control's reply.
func expectSilence(t *testing.T, s *Server, c *dhcptest.Client, r dhcptest.Request, control dhcptest.Request) {
	t.Helper()
	before := s.Stats().Ignored
	if err := c.Send(r.Bytes(), dhcptest.Broadcast); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the server to ignore the request", testenv.Holds(func() bool { return s.Stats().Ignored > before }, nil))
	exchange(t, c, control, dhcptest.Broadcast)
	if c.Pending(r.XID) {
		t.Errorf("xid %#x got a reply; want silence", r.XID)
	}
}

func TestProxyOverTheWire(t *testing.T) {
	p := dhcptest.TestPair(t, "rvt", 10)
	b := dhcptest.NewBooter(map[string]shared.BootTarget{dhcptest.MAC(66).String(): shared.BootNone})
	// No Interface: the server finds it from its address, as an operator would configure it.
	s := newTestServer(t, Config{ServerIP: p.ServerIP, Booter: b,
		ScriptURL: func(mac net.HardwareAddr) string {
			return "http://" + p.ServerIP.String() + ":8080/boot/" + mac.String() + ".ipxe"
		}})
	serveIn(t, p, s)
	c := clientIn(t, p, nil)

	t.Run("BIOS PXE", func(t *testing.T) {
		offer, from := exchange(t, c, dhcptest.Request{XID: 0x100, Arch: 0, PXE: true}, dhcptest.Broadcast)
		if offer.MessageType() != dhcpv4.MessageTypeOffer || offer.BootFileName != "undionly.kpxe" ||
			!offer.ServerIPAddr.Equal(p.ServerIP) || !offer.YourIPAddr.IsUnspecified() || offer.ClassIdentifier() != "PXEClient" {
			t.Errorf("offer: %s", offer.Summary())
		}
		if !from.IP.Equal(p.ServerIP) || from.Port != PortServer {
			t.Errorf("offer came from %v, want %v:67", from, p.ServerIP)
		}
	})
	t.Run("EFI PXE", func(t *testing.T) {
		offer, _ := exchange(t, c, dhcptest.Request{XID: 0x101, Arch: 7, PXE: true}, dhcptest.Broadcast)
		if offer.BootFileName != "snponly.efi" || !offer.ServerIPAddr.Equal(p.ServerIP) {
			t.Errorf("offer: %s", offer.Summary())
		}
	})
	t.Run("iPXE", func(t *testing.T) {
		offer, _ := exchange(t, c, dhcptest.Request{XID: 0x102, Arch: 0, PXE: true, IPXE: true}, dhcptest.Broadcast)
		if want := "http://" + p.ServerIP.String() + ":8080/boot/" + dhcptest.MAC(1).String() + ".ipxe"; offer.BootFileName != want {
			t.Errorf("file %q, want %q", offer.BootFileName, want)
		}
	})
	t.Run("non-PXE client gets nothing", func(t *testing.T) {
		expectSilence(t, s, c, dhcptest.Request{XID: 0x103, Arch: -1},
			dhcptest.Request{XID: 0x104, Arch: 0, PXE: true})
	})
	t.Run("retired machine gets nothing", func(t *testing.T) {
		expectSilence(t, s, c, dhcptest.Request{XID: 0x105, MAC: dhcptest.MAC(66), Arch: 0, PXE: true},
			dhcptest.Request{XID: 0x106, Arch: 0, PXE: true})
	})
	t.Run("port 4011 REQUEST gets a unicast ACK", func(t *testing.T) {
		// This socket is bound to the client's unicast address: broadcasts never reach it.
		uc := clientIn(t, p, p.ClientIP)
		req := dhcptest.Request{XID: 0x107, Type: dhcpv4.MessageTypeRequest, Arch: 7, PXE: true, IPXE: true, ClientIP: p.ClientIP}
		ack, from := exchange(t, uc, req, &net.UDPAddr{IP: p.ServerIP, Port: PortPXE})
		if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.ServerIPAddr.Equal(p.ServerIP) || ack.BootFileName == "" {
			t.Errorf("ack: %s", ack.Summary())
		}
		if !from.IP.Equal(p.ServerIP) || from.Port != PortPXE {
			t.Errorf("ACK came from %v, want %v:4011 (iPXE drops others)", from, p.ServerIP)
		}
	})
	t.Run("bad datagrams are dropped and serving goes on", func(t *testing.T) {
		before := s.Stats().Malformed
		good := dhcptest.Request{XID: 0x108, Arch: 0, PXE: true}.Bytes()
		for _, bad := range [][]byte{
			[]byte("GET / HTTP/1.0\r\n\r\n"),
			good[:100],
			append(append([]byte{}, good...), make([]byte, 3000)...), // oversized: fragmented on the wire
		} {
			if err := c.Send(bad, dhcptest.Broadcast); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, 10*time.Second, "3 malformed datagrams", testenv.Holds(func() bool { return s.Stats().Malformed >= before+3 }, nil))
		exchange(t, c, dhcptest.Request{XID: 0x109, Arch: 0, PXE: true}, dhcptest.Broadcast)
	})
}

func TestFullOverTheWire(t *testing.T) {
	p := dhcptest.TestPair(t, "rvt", 11)
	pool := Pool{Start: net.IPv4(10, 77, 11, 100), End: net.IPv4(10, 77, 11, 199), Router: p.ServerIP}
	s := newTestServer(t, Config{Mode: ModeFull, ServerIP: p.ServerIP, Interface: p.ServerIf, Pool: pool})
	serveIn(t, p, s)
	c := clientIn(t, p, nil)

	seen := map[string]int{}
	for i := 1; i <= 5; i++ {
		offer, _ := exchange(t, c, dhcptest.Request{XID: uint32(0x200 + i), MAC: dhcptest.MAC(i), Arch: -1}, dhcptest.Broadcast)
		if offer.MessageType() != dhcpv4.MessageTypeOffer || !pool.contains(offer.YourIPAddr) {
			t.Fatalf("client %d: %s", i, offer.Summary())
		}
		if j, dup := seen[offer.YourIPAddr.String()]; dup {
			t.Errorf("clients %d and %d both offered %v", j, i, offer.YourIPAddr)
		}
		seen[offer.YourIPAddr.String()] = i
	}
	// Same MAC, new transaction: the same address again; then REQUEST binds it.
	offer, _ := exchange(t, c, dhcptest.Request{XID: 0x301, MAC: dhcptest.MAC(3), Arch: -1}, dhcptest.Broadcast)
	if seen[offer.YourIPAddr.String()] != 3 {
		t.Errorf("MAC 3 re-offered %v, which was client %d's", offer.YourIPAddr, seen[offer.YourIPAddr.String()])
	}
	ack, _ := exchange(t, c, dhcptest.Request{XID: 0x302, MAC: dhcptest.MAC(3), Type: dhcpv4.MessageTypeRequest, Arch: -1,
		RequestedIP: offer.YourIPAddr, ServerID: p.ServerIP}, dhcptest.Broadcast)
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Errorf("ack: %s", ack.Summary())
	}
}

func (p Pool) contains(ip net.IP) bool {
	l, err := newLeases(p)
	if err != nil {
		return false
	}
	_, ok := l.contains(ip)
	return ok
}

func TestListenFailsClearlyWhenPortTaken(t *testing.T) {
	p := dhcptest.TestPair(t, "rvt", 12)
	err := dhcptest.Do(p.ServerNS, func() error {
		first, err := Listen(p.ServerIf, PortServer)
		if err != nil {
			return err
		}
		defer first.Close()
		_, err = Listen(p.ServerIf, PortServer)
		if err == nil {
			return errors.New("a second server on the same interface and port was allowed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
