package dhcp

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listen opens a UDP socket on 0.0.0.0:port bound to the device iface. Binding to the
// wildcard address is what lets it receive broadcasts (a socket bound to the unicast
// address never sees a DISCOVER); SO_BINDTODEVICE keeps it to one interface, and makes
// its broadcast replies leave through that interface. No SO_REUSEPORT: a second server
// on the same interface fails loudly instead of silently taking half of the packets.
// Needs CAP_NET_RAW for SO_BINDTODEVICE and CAP_NET_BIND_SERVICE for port 67.
func Listen(iface string, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
			if serr == nil && iface != "" {
				serr = unix.BindToDevice(int(fd), iface)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s port %d (needs root or CAP_NET_BIND_SERVICE+CAP_NET_RAW; is another DHCP server running there?): %w", iface, port, err)
	}
	return pc.(*net.UDPConn), nil
}

// ResolveInterface returns iface if set, else the name of the interface that holds ip.
func ResolveInterface(iface string, ip net.IP) (string, error) {
	if iface != "" {
		if _, err := net.InterfaceByName(iface); err != nil {
			return "", fmt.Errorf("dhcp: interface %q: %w", iface, err)
		}
		return iface, nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("dhcp: list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return ifc.Name, nil
			}
		}
	}
	return "", fmt.Errorf("dhcp: no interface has address %v; set the interface to serve on", ip)
}
