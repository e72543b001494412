package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// AdvertiseRouter sends an IPv6 router advertisement for prefix (a /64) on iface every
// interval until ctx ends. iPXE waits ~13 s for IPv6 autoconfiguration on a segment that
// has no router advertisements (docs/lab-notes.md, "iPXE waits for IPv6 router advertisements"); the lab's bridge has none
// otherwise. The advertisement says "not a default router" (lifetime 0) and offers the
// prefix for address autoconfiguration, with no DHCPv6: the lab stays IPv4.
func AdvertiseRouter(ctx context.Context, iface, prefix string, interval time.Duration) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return err
	}
	_, pfx, err := net.ParseCIDR(prefix)
	if err != nil || pfx.IP.To4() != nil {
		return fmt.Errorf("prefix %q: want an IPv6 /64 such as fd00:232:80::/64", prefix)
	}
	if ones, _ := pfx.Mask.Size(); ones != 64 {
		return fmt.Errorf("prefix %q: autoconfiguration needs a /64", prefix)
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return fmt.Errorf("raw ICMPv6 socket: %w", err)
	}
	defer unix.Close(fd)
	// Hosts drop router advertisements whose hop limit is not 255 (RFC 4861 §6.1.2).
	for _, opt := range [][2]int{{unix.IPV6_MULTICAST_HOPS, 255}, {unix.IPV6_UNICAST_HOPS, 255},
		{unix.IPV6_MULTICAST_IF, ifi.Index}, {unix.IPV6_MULTICAST_LOOP, 0}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, opt[0], opt[1]); err != nil {
			return fmt.Errorf("setsockopt %d: %w", opt[0], err)
		}
	}
	if err := unix.BindToDevice(fd, iface); err != nil {
		return fmt.Errorf("bind to %s: %w", iface, err)
	}
	msg := routerAdvert(pfx.IP.To16(), ifi.HardwareAddr)
	to := &unix.SockaddrInet6{ZoneId: uint32(ifi.Index)}
	copy(to.Addr[:], net.ParseIP("ff02::1").To16())
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		// The kernel fills in the ICMPv6 checksum of raw ICMPv6 sockets. A failure (the
		// bridge has no link-local address yet, no port is up) is retried next tick.
		_ = unix.Sendto(fd, msg, 0, to)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// routerAdvert builds an ICMPv6 router advertisement (RFC 4861 §4.2) with a prefix
// information option and, when known, the source link-layer address option.
func routerAdvert(prefix net.IP, mac net.HardwareAddr) []byte {
	b := make([]byte, 16, 64)
	b[0] = 134 // type: router advertisement; code and checksum 0
	b[4] = 64  // current hop limit hint
	// b[5] flags: no managed (M) or other (O) configuration: no DHCPv6
	// b[6:8] router lifetime 0: not a default router; b[8:16] reachable and retrans 0
	pi := make([]byte, 32)
	pi[0], pi[1], pi[2] = 3, 4, 64 // prefix information, 4×8 bytes, prefix length 64
	pi[3] = 0xc0                   // on-link (L) and autonomous (A)
	binary.BigEndian.PutUint32(pi[4:], 3600)
	binary.BigEndian.PutUint32(pi[8:], 1800)
	copy(pi[16:], prefix)
	b = append(b, pi...)
	if len(mac) == 6 {
		b = append(b, 1, 1) // source link-layer address, 1×8 bytes
		b = append(b, mac...)
	}
	return b
}
