package dhcp

import (
	"bytes"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
)

// FuzzHandleDHCP feeds arbitrary datagrams to the packet handler of a proxy and a full
// server on both ports. It must never panic; whatever the decoder rejects gets no reply;
// and every reply is a decodable BOOTREPLY for the same transaction and client.
func FuzzHandleDHCP(f *testing.F) {
	for _, r := range []dhcptest.Request{
		{XID: 1, Arch: 0, PXE: true},
		{XID: 2, Arch: 7, PXE: true, IPXE: true},
		{XID: 3, Arch: -1},
		{XID: 4, Type: dhcpv4.MessageTypeRequest, Arch: 9, PXE: true, ClientIP: net.IPv4(10, 77, 0, 5)},
		{XID: 5, Type: dhcpv4.MessageTypeRequest, Arch: -1, RequestedIP: net.IPv4(10, 77, 0, 100), ServerID: testServerIP},
		{XID: 6, Type: dhcpv4.MessageTypeRelease, Arch: -1, ClientIP: net.IPv4(10, 77, 0, 100)},
		{XID: 7, Type: dhcpv4.MessageTypeInform, Arch: -1, ClientIP: net.IPv4(10, 77, 0, 5)},
		{XID: 8, Arch: 16, HTTP: true},
	} {
		f.Add(r.Bytes(), uint8(0))
		f.Add(r.Bytes(), uint8(3))
	}
	f.Add([]byte{}, uint8(0))
	f.Add(make([]byte, 240), uint8(1))

	proxy := newFuzzServer(f, Config{})
	full := newFuzzServer(f, Config{Mode: ModeFull, Pool: fullPool})
	from := &net.UDPAddr{IP: net.IPv4(10, 77, 0, 5), Port: 68}
	f.Fuzz(func(t *testing.T, data []byte, sel uint8) {
		s := proxy
		if sel&1 == 1 {
			s = full
		}
		port := PortServer
		if sel&2 == 2 {
			port = PortPXE
		}
		out, to := s.respond(data, port, from)
		req, err := dhcpv4.FromBytes(data)
		if err != nil {
			if out != nil {
				t.Fatalf("replied to an undecodable datagram (%v)", err)
			}
			return
		}
		if out == nil {
			return
		}
		if to == nil {
			t.Fatal("a reply without a destination")
		}
		resp, err := dhcpv4.FromBytes(out)
		if err != nil {
			t.Fatalf("the reply does not decode: %v", err)
		}
		if resp.OpCode != dhcpv4.OpcodeBootReply || resp.TransactionID != req.TransactionID ||
			!bytes.Equal(resp.ClientHWAddr, req.ClientHWAddr) {
			t.Fatalf("reply %s does not answer request %s", resp.Summary(), req.Summary())
		}
		if len(out) > 1500 {
			t.Fatalf("reply of %d bytes does not fit one frame", len(out))
		}
	})
}

func newFuzzServer(f *testing.F, cfg Config) *Server {
	cfg.ServerIP, cfg.ScriptURL = testServerIP, scriptURL
	cfg.FileURL = func(name string) string { return "http://10.77.0.1:8080/boot/files/" + name }
	s, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	return s
}
