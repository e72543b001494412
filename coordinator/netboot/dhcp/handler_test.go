package dhcp

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
	"github.com/rivetmetal/rivet/shared"
)

var testServerIP = net.IPv4(10, 77, 0, 1).To4()

func scriptURL(mac net.HardwareAddr) string {
	return "http://10.77.0.1:8080/boot/" + strings.ReplaceAll(mac.String(), ":", "-") + ".ipxe"
}

func newTestServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.ServerIP == nil {
		cfg.ServerIP = testServerIP
	}
	if cfg.ScriptURL == nil {
		cfg.ScriptURL = scriptURL
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var fullPool = Pool{
	Start: net.IPv4(10, 77, 0, 100), End: net.IPv4(10, 77, 0, 102),
	Router: net.IPv4(10, 77, 0, 1), DNS: []net.IP{net.IPv4(10, 77, 0, 1)}, LeaseTime: time.Hour,
}

// ask runs one request through the handler and decodes the reply (nil if silent).
func ask(t *testing.T, s *Server, r dhcptest.Request, port int, from *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	t.Helper()
	if r.MAC == nil {
		r.MAC = dhcptest.MAC(1)
	}
	out, to := s.respond(r.Bytes(), port, from)
	if out == nil {
		return nil, nil
	}
	p, err := dhcpv4.FromBytes(out)
	if err != nil {
		t.Fatalf("the server sent a reply it cannot decode itself: %v", err)
	}
	if p.TransactionID != txid(r.XID) || !bytes.Equal(p.ClientHWAddr, r.MAC) {
		t.Fatalf("reply has xid %v mac %v, want %#x %v", p.TransactionID, p.ClientHWAddr, r.XID, r.MAC)
	}
	return p, to
}

func txid(x uint32) dhcpv4.TransactionID {
	return dhcpv4.TransactionID{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}
}

func TestProxyBIOSDiscoverGetsUndionly(t *testing.T) {
	s := newTestServer(t, Config{})
	p, to := ask(t, s, dhcptest.Request{XID: 1, Arch: 0, PXE: true}, PortServer, nil)
	if p == nil {
		t.Fatal("no offer for a BIOS PXE DISCOVER")
	}
	if p.MessageType() != dhcpv4.MessageTypeOffer {
		t.Errorf("type %v, want OFFER", p.MessageType())
	}
	if !p.ServerIPAddr.Equal(testServerIP) {
		t.Errorf("siaddr %v, want %v (iPXE ignores proxy replies without it)", p.ServerIPAddr, testServerIP)
	}
	if !p.YourIPAddr.IsUnspecified() {
		t.Errorf("yiaddr %v: a proxy must not offer an address", p.YourIPAddr)
	}
	if p.BootFileName != "undionly.kpxe" {
		t.Errorf("file %q, want undionly.kpxe", p.BootFileName)
	}
	if p.ClassIdentifier() != "PXEClient" {
		t.Errorf("option 60 %q, want PXEClient", p.ClassIdentifier())
	}
	if !p.ServerIdentifier().Equal(testServerIP) {
		t.Errorf("option 54 %v, want %v", p.ServerIdentifier(), testServerIP)
	}
	if got := p.Options.Get(dhcpv4.OptionVendorSpecificInformation); !bytes.Equal(got, pxeVendorOptions) {
		t.Errorf("option 43 %v, want %v (skip boot server discovery)", got, pxeVendorOptions)
	}
	if got := p.Options.Get(dhcpv4.OptionClientMachineIdentifier); len(got) != 17 {
		t.Errorf("option 97 (client GUID) not echoed: %v", got)
	}
	if !to.IP.Equal(net.IPv4bcast) || to.Port != PortClient {
		t.Errorf("sent to %v, want broadcast port 68", to)
	}
	if st := s.Stats(); st.Requests["bios"] != 1 || st.Replies != 1 || st.Ignored != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestProxyFileByArch(t *testing.T) {
	s := newTestServer(t, Config{BootFiles: BootFiles{EFIArm64: "ipxe-arm64.efi"}})
	for _, tc := range []struct {
		arch int
		file string
	}{{7, "snponly.efi"}, {9, "snponly.efi"}, {11, "ipxe-arm64.efi"}} {
		p, _ := ask(t, s, dhcptest.Request{XID: uint32(tc.arch), Arch: tc.arch, PXE: true}, PortServer, nil)
		if p == nil {
			t.Fatalf("arch %d: no offer", tc.arch)
		}
		if p.BootFileName != tc.file {
			t.Errorf("arch %d: file %q, want %q", tc.arch, p.BootFileName, tc.file)
		}
		if p.Options.Has(dhcpv4.OptionVendorSpecificInformation) {
			t.Errorf("arch %d: option 43 sent to UEFI (some firmwares then ignore the offer)", tc.arch)
		}
		if !p.ServerIPAddr.Equal(testServerIP) {
			t.Errorf("arch %d: siaddr %v", tc.arch, p.ServerIPAddr)
		}
	}
	if st := s.Stats(); st.Requests["efi-x64"] != 2 || st.Requests["efi-arm64"] != 1 {
		t.Errorf("requests by arch %v", st.Requests)
	}
	// An architecture Rivet has no iPXE binary for is left alone, unless it already runs iPXE.
	if p, _ := ask(t, s, dhcptest.Request{XID: 20, Arch: 2, PXE: true}, PortServer, nil); p != nil {
		t.Errorf("Itanium got file %q", p.BootFileName)
	}
	if p, _ := ask(t, s, dhcptest.Request{XID: 21, Arch: 2, PXE: true, IPXE: true}, PortServer, nil); p == nil {
		t.Error("iPXE on an odd architecture got no script URL")
	}
}

func TestProxyIPXEGetsScriptURL(t *testing.T) {
	s := newTestServer(t, Config{})
	mac := dhcptest.MAC(7)
	p, _ := ask(t, s, dhcptest.Request{XID: 7, MAC: mac, Arch: 0, PXE: true, IPXE: true}, PortServer, nil)
	if p == nil {
		t.Fatal("no offer for iPXE")
	}
	if want := scriptURL(mac); p.BootFileName != want {
		t.Errorf("file %q, want %q", p.BootFileName, want)
	}
	if got := p.Options.Get(optIPXEEncap); !bytes.Equal(got, []byte{176, 1, 1}) {
		t.Errorf("option 175 %v, want 176=1 (no-pxedhcp)", got)
	}
	if !p.ServerIPAddr.Equal(testServerIP) || p.ClassIdentifier() != "PXEClient" {
		t.Errorf("siaddr %v option 60 %q", p.ServerIPAddr, p.ClassIdentifier())
	}
}

func TestLongScriptURLAlsoInOption67(t *testing.T) {
	long := "http://10.77.0.1:8080/" + strings.Repeat("x", 150)
	s := newTestServer(t, Config{ScriptURL: func(net.HardwareAddr) string { return long }})
	p, _ := ask(t, s, dhcptest.Request{XID: 1, Arch: 7, PXE: true, IPXE: true}, PortServer, nil)
	if p == nil || p.BootFileNameOption() != long {
		t.Fatalf("a URL longer than the file field must travel in option 67; got %v", p)
	}
}

// UEFI HTTP boot (option 60 "HTTPClient", arch 16) gets the iPXE binary as a URL in a
// proxy offer EDK2 accepts: no address, option 60 "HTTPClient", the URL in option 67.
func TestProxyHTTPBootGetsIPXEURL(t *testing.T) {
	b := dhcptest.NewBooter(map[string]shared.BootTarget{dhcptest.MAC(2).String(): shared.BootNone})
	s := newTestServer(t, Config{Booter: b, FileURL: func(name string) string { return "http://10.77.0.1:8080/boot/files/" + name }})
	p, to := ask(t, s, dhcptest.Request{XID: 1, Arch: 16, HTTP: true}, PortServer, nil)
	if p == nil {
		t.Fatal("no offer for a UEFI HTTP boot DISCOVER")
	}
	if want := "http://10.77.0.1:8080/boot/files/snponly.efi"; p.BootFileNameOption() != want || p.BootFileName != want {
		t.Errorf("option 67 %q, file %q: want %q in both", p.BootFileNameOption(), p.BootFileName, want)
	}
	if p.ClassIdentifier() != "HTTPClient" {
		t.Errorf("option 60 %q, want HTTPClient (EDK2 ignores other offers)", p.ClassIdentifier())
	}
	if !p.YourIPAddr.IsUnspecified() || p.Options.Has(dhcpv4.OptionVendorSpecificInformation) {
		t.Errorf("yiaddr %v, option 43 %v: a proxy HTTP offer has neither", p.YourIPAddr, p.Options.Get(dhcpv4.OptionVendorSpecificInformation))
	}
	if !to.IP.Equal(net.IPv4bcast) {
		t.Errorf("sent to %v, want broadcast", to)
	}
	if p, _ := ask(t, s, dhcptest.Request{XID: 2, Arch: 19, HTTP: true}, PortServer, nil); p == nil ||
		p.BootFileNameOption() != "http://10.77.0.1:8080/boot/files/snponly-arm64.efi" {
		t.Errorf("arm64 HTTP boot got %v", p)
	}
	if p, _ := ask(t, s, dhcptest.Request{XID: 3, MAC: dhcptest.MAC(2), Arch: 16, HTTP: true}, PortServer, nil); p != nil {
		t.Error("a retired machine got an HTTP boot offer")
	}
	// Without FileURL the server has no URL to give: silence, not a TFTP file name.
	if p, _ := ask(t, newTestServer(t, Config{}), dhcptest.Request{XID: 4, Arch: 16, HTTP: true}, PortServer, nil); p != nil {
		t.Errorf("HTTP boot answered without FileURL: file %q", p.BootFileName)
	}
}

func TestProxySilence(t *testing.T) {
	b := dhcptest.NewBooter(map[string]shared.BootTarget{
		dhcptest.MAC(2).String(): shared.BootNone,
		dhcptest.MAC(3).String(): shared.BootDisk,
	})
	var events []Event
	s := newTestServer(t, Config{Booter: b, OnEvent: func(e Event) { events = append(events, e) }})
	if p, _ := ask(t, s, dhcptest.Request{XID: 1, Arch: -1}, PortServer, nil); p != nil {
		t.Error("a plain DHCP client (no PXEClient) got a proxy offer")
	}
	if p, _ := ask(t, s, dhcptest.Request{XID: 2, MAC: dhcptest.MAC(2), Arch: 0, PXE: true}, PortServer, nil); p != nil {
		t.Error("a retired machine (boot none) got an offer")
	}
	if p, _ := ask(t, s, dhcptest.Request{XID: 3, Type: dhcpv4.MessageTypeRequest, Arch: 0, PXE: true,
		ServerID: net.IPv4(10, 77, 0, 9)}, PortServer, nil); p != nil {
		t.Error("a REQUEST for the address server got a proxy answer")
	}
	// An installed machine still gets iPXE: its script says "boot from disk".
	if p, _ := ask(t, s, dhcptest.Request{XID: 4, MAC: dhcptest.MAC(3), Arch: 0, PXE: true, IPXE: true}, PortServer, nil); p == nil {
		t.Error("an installed machine got no offer; its script is what sends it to disk")
	}
	st := s.Stats()
	if st.Ignored != 3 || st.Replies != 1 || st.Total() != 4 {
		t.Errorf("stats %+v", st)
	}
	var ignored []string
	for _, e := range events {
		if e.Kind == EventIgnored {
			ignored = append(ignored, e.Reason)
		}
		if e.Kind == EventReply && (e.Target != shared.BootDisk || e.Machine == "") {
			t.Errorf("reply event %+v: want the Booter's decision recorded", e)
		}
	}
	if len(ignored) != 3 || !strings.Contains(ignored[1], "retired") {
		t.Errorf("ignored reasons %q", ignored)
	}
}

func TestPXEPortRequestGetsUnicastAck(t *testing.T) {
	s := newTestServer(t, Config{})
	from := &net.UDPAddr{IP: net.IPv4(10, 77, 0, 50), Port: 68}
	r := dhcptest.Request{XID: 9, MAC: dhcptest.MAC(9), Type: dhcpv4.MessageTypeRequest, Arch: 7, PXE: true, IPXE: true, ClientIP: from.IP}
	p, to := ask(t, s, r, PortPXE, from)
	if p == nil {
		t.Fatal("no ACK on port 4011")
	}
	if p.MessageType() != dhcpv4.MessageTypeAck || !p.ServerIPAddr.Equal(testServerIP) || p.BootFileName != scriptURL(r.MAC) {
		t.Errorf("ACK type %v siaddr %v file %q", p.MessageType(), p.ServerIPAddr, p.BootFileName)
	}
	if to.String() != from.String() {
		t.Errorf("ACK sent to %v, want unicast to %v", to, from)
	}
	// A DISCOVER on 4011 is not part of the protocol.
	if p, _ := ask(t, s, dhcptest.Request{XID: 10, Arch: 7, PXE: true}, PortPXE, from); p != nil {
		t.Error("answered a DISCOVER on port 4011")
	}
}

func TestRelayedRequestGoesBackToRelay(t *testing.T) {
	s := newTestServer(t, Config{})
	req := dhcptest.Request{XID: 1, Arch: 0, PXE: true}
	pkt, _ := dhcpv4.FromBytes(req.Bytes())
	pkt.GatewayIPAddr = net.IPv4(10, 1, 2, 1)
	pkt.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 2, 'a', 'b'}))
	out, to := s.respond(pkt.ToBytes(), PortServer, &net.UDPAddr{IP: net.IPv4(10, 1, 2, 1), Port: 67})
	if out == nil {
		t.Fatal("no reply to a relayed DISCOVER")
	}
	p, _ := dhcpv4.FromBytes(out)
	if !to.IP.Equal(net.IPv4(10, 1, 2, 1)) || to.Port != PortServer {
		t.Errorf("sent to %v, want the relay on port 67", to)
	}
	if !p.GatewayIPAddr.Equal(net.IPv4(10, 1, 2, 1)) || !p.Options.Has(dhcpv4.OptionRelayAgentInformation) {
		t.Errorf("giaddr %v, option 82 echoed %v", p.GatewayIPAddr, p.Options.Has(dhcpv4.OptionRelayAgentInformation))
	}
}

func TestMalformedIsDropped(t *testing.T) {
	s := newTestServer(t, Config{})
	good := dhcptest.Request{XID: 1, Arch: 0, PXE: true}.Bytes()
	reply := good[:0:0]
	reply = append(reply, good...)
	reply[0] = byte(dhcpv4.OpcodeBootReply)
	bootp := dhcptest.Request{XID: 1, Arch: 0, PXE: true}
	noType, _ := dhcpv4.FromBytes(bootp.Bytes())
	noType.Options.Del(dhcpv4.OptionDHCPMessageType)
	for name, data := range map[string][]byte{
		"empty":       {},
		"truncated":   good[:200],
		"no end":      good[:241],
		"oversized":   append(append([]byte{}, good...), make([]byte, 1500)...),
		"a reply":     reply,
		"plain BOOTP": noType.ToBytes(),
		"bad cookie":  append(append(append([]byte{}, good[:236]...), 1, 2, 3, 4), good[240:]...),
	} {
		if out, _ := s.respond(data, PortServer, nil); out != nil {
			t.Errorf("%s: got a reply", name)
		}
	}
	if st := s.Stats(); st.Malformed != 7 || st.Total() != 0 || st.Replies != 0 {
		t.Errorf("stats %+v", st)
	}
	if out, _ := s.respond(good, PortServer, nil); out == nil {
		t.Error("a good packet after bad ones got no reply")
	}
}

func TestFullModeLeases(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newTestServer(t, Config{Mode: ModeFull, Pool: fullPool, Now: func() time.Time { return now }})
	addrs := map[string]bool{}
	for i := 1; i <= 3; i++ {
		p, to := ask(t, s, dhcptest.Request{XID: uint32(i), MAC: dhcptest.MAC(i), Arch: -1}, PortServer, nil)
		if p == nil || p.MessageType() != dhcpv4.MessageTypeOffer {
			t.Fatalf("client %d: no OFFER", i)
		}
		if addrs[p.YourIPAddr.String()] {
			t.Errorf("client %d got %v twice", i, p.YourIPAddr)
		}
		addrs[p.YourIPAddr.String()] = true
		if !to.IP.Equal(net.IPv4bcast) {
			t.Errorf("offer to %v, want broadcast", to)
		}
		if p.Options.Has(dhcpv4.OptionClassIdentifier) || p.BootFileName != "" {
			t.Errorf("a non-PXE client got boot options: file %q", p.BootFileName)
		}
	}
	if p, _ := ask(t, s, dhcptest.Request{XID: 4, MAC: dhcptest.MAC(4), Arch: -1}, PortServer, nil); p != nil {
		t.Errorf("pool of 3 gave a 4th address %v", p.YourIPAddr)
	}

	// The same MAC is offered the same address again; it takes it with a REQUEST.
	first, _ := ask(t, s, dhcptest.Request{XID: 5, MAC: dhcptest.MAC(1), Arch: -1}, PortServer, nil)
	again, _ := ask(t, s, dhcptest.Request{XID: 6, MAC: dhcptest.MAC(1), Arch: -1}, PortServer, nil)
	if first == nil || again == nil || !first.YourIPAddr.Equal(again.YourIPAddr) {
		t.Fatalf("re-offer differs: %v then %v", first, again)
	}
	ack, _ := ask(t, s, dhcptest.Request{XID: 7, MAC: dhcptest.MAC(1), Type: dhcpv4.MessageTypeRequest, Arch: -1,
		RequestedIP: again.YourIPAddr, ServerID: testServerIP}, PortServer, nil)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(again.YourIPAddr) {
		t.Fatalf("REQUEST for the offered address: %v", ack)
	}
	if ack.IPAddressLeaseTime(0) != time.Hour || len(ack.Router()) != 1 || ack.SubnetMask().String() != "ffffff00" {
		t.Errorf("ACK options: lease %v router %v mask %v", ack.IPAddressLeaseTime(0), ack.Router(), ack.SubnetMask())
	}

	// Asking for someone else's address gets a NAK (broadcast).
	nak, to := ask(t, s, dhcptest.Request{XID: 8, MAC: dhcptest.MAC(2), Type: dhcpv4.MessageTypeRequest, Arch: -1,
		RequestedIP: again.YourIPAddr}, PortServer, nil)
	if nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak || !to.IP.Equal(net.IPv4bcast) {
		t.Errorf("REQUEST for a taken address: %v to %v, want NAK broadcast", nak, to)
	}

	// Long after the leases ran out, the MAC still gets its old address back...
	now = now.Add(48 * time.Hour)
	back, _ := ask(t, s, dhcptest.Request{XID: 9, MAC: dhcptest.MAC(1), Arch: -1}, PortServer, nil)
	if back == nil || !back.YourIPAddr.Equal(again.YourIPAddr) {
		t.Errorf("returning MAC got %v, want its old %v", back, again.YourIPAddr)
	}
	// ...and a new MAC takes over an expired lease of another.
	if p, _ := ask(t, s, dhcptest.Request{XID: 10, MAC: dhcptest.MAC(9), Arch: -1}, PortServer, nil); p == nil {
		t.Error("a new MAC got nothing although leases expired")
	}
}

func TestFullModeRenewAfterRestart(t *testing.T) {
	s := newTestServer(t, Config{Mode: ModeFull, Pool: fullPool})
	ip := net.IPv4(10, 77, 0, 101)
	ack, to := ask(t, s, dhcptest.Request{XID: 1, Type: dhcpv4.MessageTypeRequest, Arch: -1, ClientIP: ip}, PortServer, nil)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(ip) {
		t.Fatalf("renewing a free address this server forgot: %v", ack)
	}
	if !to.IP.Equal(ip) || to.Port != PortClient {
		t.Errorf("renew ACK to %v, want unicast to %v:68", to, ip)
	}
	// A client that picked another server's offer frees what it was offered here.
	other := dhcptest.MAC(5)
	offer, _ := ask(t, s, dhcptest.Request{XID: 2, MAC: other, Arch: -1}, PortServer, nil)
	if p, _ := ask(t, s, dhcptest.Request{XID: 3, MAC: other, Type: dhcpv4.MessageTypeRequest, Arch: -1,
		RequestedIP: net.IPv4(192, 168, 1, 5), ServerID: net.IPv4(10, 77, 0, 9)}, PortServer, nil); p != nil {
		t.Error("answered a REQUEST addressed to another server")
	}
	if s.leases.lookup(other.String(), time.Now()) != nil || s.leases.byAddr[u32of(offer.YourIPAddr)] != nil {
		t.Error("the offer to a client that chose another server is still reserved")
	}
}

func u32of(ip net.IP) uint32 {
	ip = ip.To4()
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

func TestFullModePXEClient(t *testing.T) {
	b := dhcptest.NewBooter(map[string]shared.BootTarget{dhcptest.MAC(2).String(): shared.BootNone})
	s := newTestServer(t, Config{Mode: ModeFull, Pool: fullPool, Booter: b})
	p, _ := ask(t, s, dhcptest.Request{XID: 1, Arch: 7, PXE: true}, PortServer, nil)
	if p == nil || p.YourIPAddr.IsUnspecified() {
		t.Fatalf("no address for a PXE client: %v", p)
	}
	// Full mode uses the plain DHCP form every PXE ROM accepts: siaddr + file, no option 60.
	if p.BootFileName != "snponly.efi" || !p.ServerIPAddr.Equal(testServerIP) || p.Options.Has(dhcpv4.OptionClassIdentifier) {
		t.Errorf("file %q siaddr %v option 60 %q", p.BootFileName, p.ServerIPAddr, p.ClassIdentifier())
	}
	ipxe, _ := ask(t, s, dhcptest.Request{XID: 2, Arch: 7, PXE: true, IPXE: true}, PortServer, nil)
	if ipxe == nil || ipxe.BootFileName != scriptURL(dhcptest.MAC(1)) || !ipxe.Options.Has(optIPXEEncap) {
		t.Errorf("iPXE in full mode: %v", ipxe)
	}
	retired, _ := ask(t, s, dhcptest.Request{XID: 3, MAC: dhcptest.MAC(2), Arch: 0, PXE: true}, PortServer, nil)
	if retired == nil || retired.YourIPAddr.IsUnspecified() || retired.BootFileName != "" {
		t.Errorf("a retired machine in full mode: want an address and no boot file, got %v", retired)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no server IP":   {ScriptURL: scriptURL},
		"no script URL":  {ServerIP: testServerIP},
		"bad mode":       {Mode: "relay", ServerIP: testServerIP, ScriptURL: scriptURL},
		"pool outside":   {Mode: ModeFull, ServerIP: testServerIP, ScriptURL: scriptURL, Pool: Pool{Start: net.IPv4(10, 9, 0, 1), End: net.IPv4(10, 9, 0, 5)}},
		"pool reversed":  {Mode: ModeFull, ServerIP: testServerIP, ScriptURL: scriptURL, Pool: Pool{Start: net.IPv4(10, 77, 0, 9), End: net.IPv4(10, 77, 0, 5)}},
		"pool has us":    {Mode: ModeFull, ServerIP: testServerIP, ScriptURL: scriptURL, Pool: Pool{Start: net.IPv4(10, 77, 0, 1), End: net.IPv4(10, 77, 0, 5)}},
		"pool too large": {Mode: ModeFull, ServerIP: net.IPv4(10, 0, 0, 1), ScriptURL: scriptURL, Pool: Pool{Start: net.IPv4(10, 1, 0, 0), End: net.IPv4(10, 3, 0, 0), Netmask: net.CIDRMask(8, 32)}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
