package boot

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// VendorClass is the DHCP vendor class (option 60) the RAM agent sends. The firmware's
// and iPXE's requests said "PXEClient..." and were answered by the site DHCP server
// (address) and by Rivet's proxyDHCP (boot file only). Rivet's proxy answers PXEClient
// requests only, so the agent's request with this class gets a plain address lease.
const VendorClass = "rivet-agent"

// dhcpModifiers are applied to DISCOVER and REQUEST.
func dhcpModifiers() []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(VendorClass)),
		dhcpv4.WithRequestedOptions(
			dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionDomainName, dhcpv4.OptionHostName, dhcpv4.OptionInterfaceMTU,
			dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionDNSDomainSearchList,
		),
	}
}

// isAddressOffer accepts an OFFER only if it carries an address. A proxyDHCP server (Rivet's
// own, or another PXE service on the segment) may still answer a DISCOVER with an
// address-less offer (yiaddr 0.0.0.0); taking it would leave the agent without an IP.
func isAddressOffer(m *dhcpv4.DHCPv4) bool {
	if m.MessageType() != dhcpv4.MessageTypeOffer {
		return false
	}
	ip := m.YourIPAddr.To4()
	return ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() && !ip.IsMulticast() && !ip.Equal(net.IPv4bcast)
}

// requestLease runs DISCOVER/OFFER/REQUEST/ACK, skipping address-less offers.
func requestLease(ctx context.Context, c *nclient4.Client) (*nclient4.Lease, error) {
	discover, err := dhcpv4.NewDiscovery(c.InterfaceAddr(), append(dhcpModifiers(),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))...)
	if err != nil {
		return nil, err
	}
	offer, err := c.SendAndRead(ctx, c.RemoteAddr(), discover, isAddressOffer)
	if err != nil {
		return nil, fmt.Errorf("no DHCP offer with an address: %w", err)
	}
	return c.RequestFromOffer(ctx, offer, dhcpModifiers()...)
}

// route is one route a lease asks for; an invalid Gateway means on-link.
type route struct {
	Dst     netip.Prefix
	Gateway netip.Addr
}

// leaseInfo is the part of a DHCP ACK the agent configures.
type leaseInfo struct {
	Addr     netip.Prefix // the leased address with its prefix length (not masked)
	Routes   []route
	DNS      []netip.Addr
	Domain   string
	Search   []string
	Hostname string
	MTU      int
	Renew    time.Duration // T1; zero for an infinite lease
}

// parseLease checks an ACK and extracts what to configure. RFC 3442: when classless
// static routes are present the router option is ignored.
func parseLease(ack *dhcpv4.DHCPv4) (leaseInfo, error) {
	var info leaseInfo
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !ip.IsValid() || ip.IsUnspecified() {
		return info, fmt.Errorf("DHCP ACK without an address (yiaddr %v)", ack.YourIPAddr)
	}
	// Without option 1, fall back to the classful mask as other clients do.
	bits := 24
	switch first := ip.As4()[0]; {
	case first < 128:
		bits = 8
	case first < 192:
		bits = 16
	}
	if mask := ack.SubnetMask(); mask != nil {
		ones, size := mask.Size()
		if size != 32 {
			return info, fmt.Errorf("DHCP ACK with a non-contiguous subnet mask %v", net.IP(mask))
		}
		bits = ones
	}
	info.Addr = netip.PrefixFrom(ip, bits)

	if static := ack.ClasslessStaticRoute(); len(static) > 0 {
		for _, r := range static {
			dst, ok := prefixFromIPNet(r.Dest)
			if !ok {
				continue
			}
			gw, _ := netip.AddrFromSlice(r.Router.To4())
			if gw.IsValid() && gw.IsUnspecified() {
				gw = netip.Addr{}
			}
			info.Routes = append(info.Routes, route{Dst: dst, Gateway: gw})
		}
	} else if routers := ack.Router(); len(routers) > 0 {
		if gw, ok := netip.AddrFromSlice(routers[0].To4()); ok && !gw.IsUnspecified() {
			info.Routes = append(info.Routes, route{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Gateway: gw})
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok && !a.IsUnspecified() {
			info.DNS = append(info.DNS, a)
		}
	}
	info.Domain = cleanDNSName(ack.DomainName())
	if s := ack.DomainSearch(); s != nil {
		for _, l := range s.Labels {
			if l = cleanDNSName(l); l != "" {
				info.Search = append(info.Search, l)
			}
		}
	}
	info.Hostname = cleanDNSName(ack.HostName())
	if mtu, err := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, ack.Options); err == nil && mtu >= 576 && mtu <= 9216 {
		info.MTU = int(mtu)
	}
	if lease := ack.IPAddressLeaseTime(0); lease > 0 && lease != time.Duration(^uint32(0))*time.Second {
		info.Renew = ack.IPAddressRenewalTime(lease / 2)
	}
	return info, nil
}

// cleanDNSName keeps names that are safe to write into resolv.conf or sethostname.
func cleanDNSName(s string) string {
	s = strings.TrimSuffix(strings.TrimSpace(s), ".")
	if len(s) == 0 || len(s) > 253 {
		return ""
	}
	for _, r := range s {
		if !(r == '-' || r == '.' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return ""
		}
	}
	return s
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP.To4())
	ones, size := n.Mask.Size()
	if !ok || size != 32 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ones).Masked(), true
}

// resolvConf renders /etc/resolv.conf for a lease.
func resolvConf(info leaseInfo) []byte {
	var b strings.Builder
	b.WriteString("# written by rivet-agent from the DHCP lease\n")
	search := info.Search
	if len(search) == 0 && info.Domain != "" {
		search = []string{info.Domain}
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	for i, d := range info.DNS {
		if i == 3 { // the resolver reads at most three
			break
		}
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return []byte(b.String())
}
