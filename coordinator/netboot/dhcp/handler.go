package dhcp

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/rivetmetal/rivet/shared"
)

// respond is the whole protocol: one datagram in, at most one reply out, with where to
// send it. It touches no socket, so tests and the fuzzer call it directly.
func (s *Server) respond(data []byte, port int, from *net.UDPAddr) ([]byte, *net.UDPAddr) {
	req, reason := parse(data)
	if req == nil {
		s.stats.malformed.Add(1)
		s.emit(Event{Kind: EventMalformed, Port: port, Reason: reason})
		return nil, nil
	}
	c := classify(req)
	s.stats.requests[c.arch].Add(1)
	ev := Event{Kind: EventRequest, Port: port, MAC: c.mac, Arch: c.arch, Type: msgType(req)}
	s.emit(ev)

	resp, reason := s.answer(req, c, port, &ev)
	if resp == nil {
		s.stats.ignored.Add(1)
		ev.Kind, ev.Reason = EventIgnored, reason
		s.emit(ev)
		if s.debug() {
			s.log.Debug("ignored", "mac", c.mac.String(), "type", ev.Type, "port", port, "reason", reason,
				"target", ev.Target, "machine", ev.Machine)
		}
		return nil, nil
	}
	s.stats.replies.Add(1)
	ev.Kind, ev.Type = EventReply, msgType(resp)
	s.emit(ev)
	if s.debug() {
		s.log.Debug("reply", "mac", c.mac.String(), "type", ev.Type, "port", port, "arch", c.arch,
			"target", ev.Target, "machine", ev.Machine, "yiaddr", resp.YourIPAddr, "file", resp.BootFileName)
	}
	return resp.ToBytes(), s.destination(req, resp, port, from)
}

// parse decodes a request, or says why it is not one.
func parse(data []byte) (*dhcpv4.DHCPv4, string) {
	if len(data) > maxRequest {
		return nil, "oversized"
	}
	req, err := dhcpv4.FromBytes(data)
	switch {
	case err != nil:
		return nil, "undecodable: " + err.Error()
	case req.OpCode != dhcpv4.OpcodeBootRequest:
		return nil, "not a BOOTREQUEST"
	case req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6:
		return nil, "not an Ethernet client"
	case msgType(req) == dhcpv4.MessageTypeNone:
		return nil, "no DHCP message type (plain BOOTP)"
	}
	return req, ""
}

// debug reports whether per-packet logging is on; checked first because building the
// arguments allocates even when the handler then drops the record.
func (s *Server) debug() bool { return s.log.Enabled(context.Background(), slog.LevelDebug) }

func (s *Server) emit(ev Event) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(ev)
	}
}

// answer builds the reply for one request, or returns the reason for silence.
func (s *Server) answer(req *dhcpv4.DHCPv4, c client, port int, ev *Event) (*dhcpv4.DHCPv4, string) {
	if port == PortPXE {
		return s.answerPXE(req, c, ev)
	}
	if s.cfg.Mode == ModeFull {
		return s.answerFull(req, c, ev)
	}
	return s.answerProxy(req, c, ev)
}

// answerProxy: boot information for PXE clients, nothing else. The offer goes out for a
// DISCOVER; a REQUEST on port 67 is for the address server, unless the client names us.
func (s *Server) answerProxy(req *dhcpv4.DHCPv4, c client, ev *Event) (*dhcpv4.DHCPv4, string) {
	var typ dhcpv4.MessageType
	switch msgType(req) {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		if !s.isUs(ipOption(req, dhcpv4.OptionServerIdentifier)) {
			return nil, "request for another server"
		}
		typ = dhcpv4.MessageTypeAck
	default:
		return nil, "proxy mode answers DISCOVER only"
	}
	if !c.pxe && !c.http {
		return nil, "not a PXE client"
	}
	resp := s.newReply(req, typ)
	if reason := s.addBoot(resp, req, c, ev, true); reason != "" {
		return nil, reason
	}
	return resp, ""
}

// answerPXE: the PXE boot server on port 4011. iPXE asks here after a proxy offer
// ("ProxyDHCPREQUEST") and ignores the answer unless siaddr is set; UEFI PXE asks here
// when the offer had no option 43.
func (s *Server) answerPXE(req *dhcpv4.DHCPv4, c client, ev *Event) (*dhcpv4.DHCPv4, string) {
	switch msgType(req) {
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
	default:
		return nil, "port 4011 answers REQUEST only"
	}
	if !c.pxe {
		return nil, "not a PXE client"
	}
	resp := s.newReply(req, dhcpv4.MessageTypeAck)
	if reason := s.addBoot(resp, req, c, ev, true); reason != "" {
		return nil, reason
	}
	return resp, ""
}

// answerFull: an authoritative DHCP server for an isolated segment. Every client gets an
// address; PXE clients also get boot information unless they are retired.
func (s *Server) answerFull(req *dhcpv4.DHCPv4, c client, ev *Event) (*dhcpv4.DHCPv4, string) {
	now := s.cfg.Now()
	mac := c.mac.String()
	switch msgType(req) {
	case dhcpv4.MessageTypeDiscover:
		ip := s.leases.offer(mac, ipOption(req, dhcpv4.OptionRequestedIPAddress), now)
		if ip == nil {
			s.warn.Warn("address pool exhausted", "mac", c.mac.String(), "start", s.cfg.Pool.Start, "end", s.cfg.Pool.End)
			return nil, "pool exhausted"
		}
		return s.fullReply(req, c, ev, dhcpv4.MessageTypeOffer, ip), ""
	case dhcpv4.MessageTypeRequest:
		return s.answerFullRequest(req, c, ev, now)
	case dhcpv4.MessageTypeRelease:
		s.leases.release(mac, req.ClientIPAddr, now)
		return nil, "release recorded"
	case dhcpv4.MessageTypeDecline:
		s.warn.Warn("a client declined its address: something else uses it", "mac", c.mac.String(), "ip", ipOption(req, dhcpv4.OptionRequestedIPAddress))
		s.leases.decline(mac, ipOption(req, dhcpv4.OptionRequestedIPAddress), now)
		return nil, "decline recorded"
	case dhcpv4.MessageTypeInform:
		resp := s.newReply(req, dhcpv4.MessageTypeAck)
		s.addNetwork(resp, false)
		return resp, ""
	}
	return nil, "unexpected message type"
}

func (s *Server) answerFullRequest(req *dhcpv4.DHCPv4, c client, ev *Event, now time.Time) (*dhcpv4.DHCPv4, string) {
	mac := c.mac.String()
	sid := ipOption(req, dhcpv4.OptionServerIdentifier)
	if sid != nil && !s.isUs(sid) {
		s.leases.forget(mac)
		return nil, "client chose another server"
	}
	ip := ipOption(req, dhcpv4.OptionRequestedIPAddress) // SELECTING and INIT-REBOOT
	if ip == nil || ip.IsUnspecified() {
		ip = req.ClientIPAddr // RENEWING and REBINDING
	}
	if ip == nil || ip.IsUnspecified() {
		return nil, "request names no address"
	}
	if ok, _ := s.leases.bind(mac, ip, s.cfg.Pool.LeaseTime, now); !ok {
		// Authoritative: on an isolated lab segment, an address we did not give is wrong.
		nak := s.newReply(req, dhcpv4.MessageTypeNak)
		nak.UpdateOption(dhcpv4.OptMessage("address not available; start over with DISCOVER"))
		return nak, ""
	}
	return s.fullReply(req, c, ev, dhcpv4.MessageTypeAck, ip), ""
}

// fullReply is an OFFER or ACK carrying an address, plus boot information for PXE clients.
func (s *Server) fullReply(req *dhcpv4.DHCPv4, c client, ev *Event, typ dhcpv4.MessageType, ip net.IP) *dhcpv4.DHCPv4 {
	resp := s.newReply(req, typ)
	resp.YourIPAddr = ip
	s.addNetwork(resp, true)
	if c.pxe || c.http {
		// A client we cannot boot (retired, unknown firmware) still gets its address.
		s.addBoot(resp, req, c, ev, false)
	}
	return resp
}

// newReply starts a reply with the request's transaction and relay fields. It does not
// use dhcpv4.NewReplyFromRequest, which draws a random transaction id it then overwrites.
func (s *Server) newReply(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	resp := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       dhcpv4.Options{},
	}
	if typ == dhcpv4.MessageTypeAck || typ == dhcpv4.MessageTypeNak {
		resp.ClientIPAddr = req.ClientIPAddr
	}
	resp.UpdateOption(dhcpv4.OptMessageType(typ))
	resp.UpdateOption(dhcpv4.OptServerIdentifier(s.serverIP[:]))
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := req.Options.Get(code); v != nil {
			resp.Options[code.Code()] = v // RFC 3046 and RFC 6842: echo them back
		}
	}
	return resp
}

// addBoot puts the boot information for c into resp and records the Booter's decision
// in ev. It returns why the client cannot be booted, or "". proxy selects the ProxyDHCP
// form (option 60 "PXEClient", option 43 for BIOS) over the plain DHCP form (siaddr and
// file only, which every PXE ROM takes from an address server's offer).
func (s *Server) addBoot(resp, req *dhcpv4.DHCPv4, c client, ev *Event, proxy bool) string {
	target, machine := shared.BootAgent, shared.MachineID("")
	if s.cfg.Booter != nil {
		target, machine = s.cfg.Booter.BootFor(c.mac)
		if !target.Valid() {
			target = shared.BootAgent // unknown machines are discovered by the agent
		}
	}
	ev.Target, ev.Machine = target, machine
	if target == shared.BootNone {
		return "machine is retired (boot none)"
	}
	var file string
	switch {
	case c.ipxe:
		// iPXE fetches its per-machine script over HTTP; the script decides agent or disk.
		file = s.cfg.ScriptURL(c.mac)
		resp.Options[optIPXEEncap.Code()] = ipxeNoProxyWait
		if len(file) > 127 { // does not fit the BOOTP file field; iPXE reads option 67
			resp.UpdateOption(dhcpv4.OptBootFileName(file))
		}
	case c.http:
		// UEFI HTTP boot: the iPXE binary by URL, then iPXE asks for its script as
		// everywhere else. Without an answer the firmware waits ~70 s for one before it
		// tries its next boot option (OVMF, measured), which is often the local disk.
		name := s.cfg.BootFiles.forArch(c.arch)
		if name == "" || s.cfg.FileURL == nil {
			return "no iPXE binary over HTTP for client firmware " + c.arch.String()
		}
		file = s.cfg.FileURL(name)
		resp.UpdateOption(dhcpv4.OptBootFileName(file))            // EDK2 reads the URL from option 67
		resp.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient")) // and ignores offers without it
		if len(file) > 127 {
			file = ""
		}
	default:
		file = s.cfg.BootFiles.forArch(c.arch)
		if file == "" {
			return "no iPXE binary for client firmware " + c.arch.String()
		}
		if proxy && c.arch == ArchBIOS {
			resp.Options[dhcpv4.OptionVendorSpecificInformation.Code()] = pxeVendorOptions
		}
	}
	resp.BootFileName = file
	resp.ServerIPAddr = s.serverIP[:] // always: iPXE ignores a proxy reply without siaddr
	if proxy && !c.http {
		resp.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	}
	if guid := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); len(guid) == 17 {
		resp.Options[dhcpv4.OptionClientMachineIdentifier.Code()] = guid
	}
	return ""
}

// addNetwork adds the pool's network options; withLease adds the lease times (not for INFORM).
func (s *Server) addNetwork(resp *dhcpv4.DHCPv4, withLease bool) {
	p := s.cfg.Pool
	resp.UpdateOption(dhcpv4.OptSubnetMask(p.Netmask))
	if p.Router != nil {
		resp.UpdateOption(dhcpv4.OptRouter(p.Router))
	}
	if len(p.DNS) > 0 {
		resp.UpdateOption(dhcpv4.OptDNS(p.DNS...))
	}
	if p.DomainName != "" {
		resp.UpdateOption(dhcpv4.OptDomainName(p.DomainName))
	}
	if withLease {
		resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(p.LeaseTime))
		resp.UpdateOption(dhcpv4.OptRenewTimeValue(p.LeaseTime / 2))
		resp.UpdateOption(dhcpv4.OptRebindingTimeValue(p.LeaseTime * 7 / 8))
	}
}

func (s *Server) isUs(ip net.IP) bool {
	return ip != nil && ip.Equal(net.IP(s.serverIP[:]))
}

var broadcast = &net.UDPAddr{IP: net.IPv4bcast, Port: PortClient}

// destination follows RFC 2131 §4.1, except that a client without an address always
// gets a broadcast: unicasting to yiaddr would need an ARP entry this server cannot set
// from a UDP socket, and a broadcast reaches every client.
func (s *Server) destination(req, resp *dhcpv4.DHCPv4, port int, from *net.UDPAddr) *net.UDPAddr {
	switch {
	case !req.GatewayIPAddr.IsUnspecified() && req.GatewayIPAddr != nil:
		return &net.UDPAddr{IP: req.GatewayIPAddr, Port: PortServer} // via the relay
	case port == PortPXE && from != nil && !from.IP.IsUnspecified():
		return from // the client has an address and asked from it
	case msgType(resp) == dhcpv4.MessageTypeNak:
		return broadcast
	case !req.ClientIPAddr.IsUnspecified() && req.ClientIPAddr != nil:
		return &net.UDPAddr{IP: req.ClientIPAddr, Port: PortClient}
	}
	return broadcast
}

// msgType and ipOption read options without the library's accessors, which allocate a
// decoder on every call; they sit on the hot path.
func msgType(p *dhcpv4.DHCPv4) dhcpv4.MessageType {
	if v := p.Options.Get(dhcpv4.OptionDHCPMessageType); len(v) == 1 {
		return dhcpv4.MessageType(v[0])
	}
	return dhcpv4.MessageTypeNone
}

func ipOption(p *dhcpv4.DHCPv4, code dhcpv4.OptionCode) net.IP {
	if v := p.Options.Get(code); len(v) == net.IPv4len {
		return net.IP(v)
	}
	return nil
}
