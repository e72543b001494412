package boot

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func ack(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseLeaseSiteDHCP(t *testing.T) {
	info, err := parseLease(ack(t,
		dhcpv4.WithYourIP(net.IPv4(10, 0, 0, 23)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4(10, 0, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptDNS(net.IPv4(10, 0, 0, 2), net.IPv4(10, 0, 0, 3))),
		dhcpv4.WithOption(dhcpv4.OptDomainName("rack1.example")),
		dhcpv4.WithOption(dhcpv4.OptHostName("node-7")),
		dhcpv4.WithLeaseTime(600),
		dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, []byte{0x23, 0x28}), // 9000
	))
	if err != nil {
		t.Fatal(err)
	}
	if info.Addr != netip.MustParsePrefix("10.0.0.23/24") || info.Hostname != "node-7" || info.MTU != 9000 {
		t.Fatalf("lease %+v", info)
	}
	if len(info.Routes) != 1 || info.Routes[0].Dst.Bits() != 0 || info.Routes[0].Gateway != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("routes %+v, want default via 10.0.0.1", info.Routes)
	}
	if info.Renew != 300*time.Second {
		t.Fatalf("renew after %s, want half the 600 s lease", info.Renew)
	}
	want := "search rack1.example\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n"
	if got := string(resolvConf(info)); !strings.HasSuffix(got, want) {
		t.Fatalf("resolv.conf:\n%s\nwant suffix:\n%s", got, want)
	}
}

// RFC 3442: with classless static routes present, the router option is ignored.
func TestParseLeaseClasslessRoutesWin(t *testing.T) {
	_, dst, _ := net.ParseCIDR("192.168.50.0/24")
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	info, err := parseLease(ack(t,
		dhcpv4.WithYourIP(net.IPv4(10, 9, 8, 7)),
		dhcpv4.WithNetmask(net.CIDRMask(32, 32)),
		dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4(10, 9, 8, 254))),
		dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
			&dhcpv4.Route{Dest: dst, Router: net.IPv4(0, 0, 0, 0)},
			&dhcpv4.Route{Dest: def, Router: net.IPv4(10, 9, 0, 1)},
		)),
	))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Routes) != 2 || info.Routes[0].Gateway.IsValid() || info.Routes[1].Gateway != netip.MustParseAddr("10.9.0.1") {
		t.Fatalf("routes %+v; want on-link 192.168.50.0/24 and default via 10.9.0.1", info.Routes)
	}
	if info.Renew != 0 {
		t.Errorf("no lease time given, renew = %s; want 0 (nothing to renew)", info.Renew)
	}
}

func TestParseLeaseRejectsAndCleans(t *testing.T) {
	if _, err := parseLease(ack(t)); err == nil {
		t.Error("ACK without yiaddr accepted")
	}
	info, err := parseLease(ack(t,
		dhcpv4.WithYourIP(net.IPv4(172, 16, 1, 2)), // no mask: classful /16
		dhcpv4.WithOption(dhcpv4.OptHostName("bad\nname")),
		dhcpv4.WithOption(dhcpv4.OptDomainName("x; rm -rf /")),
	))
	if err != nil {
		t.Fatal(err)
	}
	if info.Addr.Bits() != 16 || info.Hostname != "" || info.Domain != "" {
		t.Fatalf("lease %+v; want /16 and unsafe names dropped", info)
	}
}

// A proxyDHCP server answers a DISCOVER with an offer without an address; the agent must
// wait for the site DHCP server's offer instead.
func TestIsAddressOfferSkipsProxyDHCP(t *testing.T) {
	offer := func(ip net.IP) *dhcpv4.DHCPv4 {
		m, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer), dhcpv4.WithYourIP(ip),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if isAddressOffer(offer(net.IPv4zero)) {
		t.Error("proxyDHCP offer (yiaddr 0.0.0.0) accepted")
	}
	if !isAddressOffer(offer(net.IPv4(10, 0, 2, 15))) {
		t.Error("site DHCP offer rejected")
	}
	if isAddressOffer(ack(t, dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)))) {
		t.Error("an ACK accepted as an offer")
	}
}

func TestDHCPRequestCarriesVendorClass(t *testing.T) {
	m, err := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0, 0, 0, 0, 1}, dhcpModifiers()...)
	if err != nil {
		t.Fatal(err)
	}
	if m.ClassIdentifier() != VendorClass || !strings.HasPrefix(VendorClass, "rivet") {
		t.Fatalf("vendor class %q", m.ClassIdentifier())
	}
	if !m.IsOptionRequested(dhcpv4.OptionClasslessStaticRoute) || !m.IsOptionRequested(dhcpv4.OptionRouter) {
		t.Fatal("DISCOVER does not request routes")
	}
}

// DHCP replies come from the network: whatever parses must yield a sane lease and a
// resolv.conf with only the lines we write.
func FuzzParseLease(f *testing.F) {
	seed, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.IPv4(10, 0, 0, 5)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithOption(dhcpv4.OptDNS(net.IPv4(1, 1, 1, 1))),
		dhcpv4.WithOption(dhcpv4.OptDomainName("example.org")), dhcpv4.WithLeaseTime(3600))
	f.Add(seed.ToBytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := dhcpv4.FromBytes(data)
		if err != nil {
			return
		}
		info, err := parseLease(m)
		if err != nil {
			return
		}
		if !info.Addr.IsValid() || !info.Addr.Addr().Is4() || info.Renew < 0 {
			t.Fatalf("lease %+v", info)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(resolvConf(info))), "\n") {
			if !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "search ") && !strings.HasPrefix(line, "nameserver ") {
				t.Fatalf("resolv.conf line %q", line)
			}
		}
	})
}
