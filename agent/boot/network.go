package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Timings of the network bring-up. With BOOTIF the agent keeps trying until its context
// ends: a server whose switch port is still negotiating must not give up after one round.
const (
	linkPoll        = 200 * time.Millisecond
	driverRescan    = time.Second      // look for late devices while the NIC to use is missing
	statusEvery     = 10 * time.Second // console line while still waiting
	dhcpAttempt     = 2 * time.Second  // first DHCP timeout; nclient4 doubles it per retry
	dhcpRetries     = 3
	dhcpBackoff     = time.Second
	renewRetryEvery = 30 * time.Second
)

// leaseResult is a lease won on one NIC, with the client kept open for renewals.
type leaseResult struct {
	iface  string
	mac    net.HardwareAddr
	client *nclient4.Client
	lease  *nclient4.Lease
}

// releaseFrom gives the lease back to its server while its address is still configured:
// a DHCPRELEASE comes from the leased address (RFC 2131 4.4.4), and the raw client's
// packets come from 0.0.0.0, which a Linux server drops when they are not broadcast.
func (r *leaseResult) releaseFrom(addr netip.Addr) error {
	c, err := nclient4.New(r.iface, nclient4.WithUnicast(&net.UDPAddr{IP: addr.AsSlice(), Port: nclient4.ClientPort}))
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Release(r.lease, dhcpModifiers()...)
}

// bringUpNetwork brings up lo and configures one NIC by DHCP. With a BOOTIF address
// (the NIC the firmware booted from) only that NIC is touched; without one, the NICs
// are tried one at a time until the coordinator at urls answers through one (probe.go).
func bringUpNetwork(ctx context.Context, log *slog.Logger, drivers *driverLoader, out *progress, bootIF net.HardwareAddr, urls []string) (*leaseResult, leaseInfo, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		if err := netlink.LinkSetUp(lo); err != nil {
			log.Warn("bringing up lo", "err", err)
		}
	}
	if bootIF == nil {
		return probeNICs(ctx, log, drivers, out, urls)
	}
	return leaseBootNIC(ctx, log, drivers, out, bootIF)
}

// leaseBootNIC waits for the NIC with the BOOTIF address to appear and get a link, then
// runs DHCP on it alone until it wins a lease or ctx ends.
func leaseBootNIC(ctx context.Context, log *slog.Logger, drivers *driverLoader, out *progress, bootIF net.HardwareAddr) (*leaseResult, leaseInfo, error) {
	start := time.Now()
	lastRescan := start
	var nic nicDevice
	err := poll(ctx, out, start, func() (bool, string) {
		nics := physicalNICs()
		found := nicOrder(nics, bootIF)
		if len(found) == 0 {
			if time.Since(lastRescan) >= driverRescan {
				lastRescan = time.Now()
				if loaded := drivers.settle(); len(loaded) > 0 {
					log.Debug("late drivers loaded", "modules", loaded)
				}
			}
			return false, fmt.Sprintf("no NIC has the address %s the machine booted from (%s); NICs found: %s; "+
				"is its driver in the initramfs? (rivet-mkinitramfs --extra-modules)", bootIF, bootIFKey, describeDevices(nics))
		}
		nic = found[0]
		if !linkReady(log, nic.Name) {
			return false, nic.String() + ", the boot NIC: no link; check its cable and switch port"
		}
		return true, ""
	})
	if err != nil {
		return nil, leaseInfo{}, err
	}
	out.printf("network: using %s: the NIC the machine booted from (%s=%s); other NICs are left alone", nic, bootIFKey, bootIF)
	log.Debug("NIC chosen", "nic", nic.Name, "mac", nic.MAC.String(), "pci", nic.PCI, "reason", "BOOTIF")

	dhcpCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	results := make(chan *leaseResult, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if r, err := leaseOn(dhcpCtx, log, nic.Name); err == nil {
			results <- r
		}
	}()
	var r *leaseResult
	err = poll(ctx, out, start, func() (bool, string) {
		select {
		case r = <-results:
			return true, ""
		default:
			return false, nic.Name + ", the boot NIC: no DHCP answer yet; check the boot network's DHCP server"
		}
	})
	if err != nil {
		return nil, leaseInfo{}, err
	}
	info, err := useLease(r)
	return r, info, err
}

// useLease configures the NIC of a lease the agent keeps, hostname included.
func useLease(r *leaseResult) (leaseInfo, error) {
	info, err := parseLease(r.lease.ACK)
	if err == nil {
		err = configure(r.iface, info)
	}
	if err != nil {
		r.client.Close()
		return leaseInfo{}, fmt.Errorf("configuring %s: %w", r.iface, err)
	}
	_ = setHostname(info) // a machine without its DHCP name still works
	return info, nil
}

// poll calls check every linkPoll until it reports done or ctx ends, printing its status
// on the console every statusEvery. The error names the last status.
func poll(ctx context.Context, out *progress, start time.Time, check func() (done bool, status string)) error {
	tick := time.NewTicker(linkPoll)
	defer tick.Stop()
	lastStatus := time.Now()
	for {
		done, status := check()
		if done {
			return nil
		}
		if now := time.Now(); now.Sub(lastStatus) >= statusEvery {
			lastStatus = now
			out.printf("waiting for network (%s): %s", now.Sub(start).Round(time.Second), status)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("no network: %s: %w", status, ctx.Err())
		}
	}
}

// linkReady sets the link up and reports whether it has carrier.
func linkReady(log *slog.Logger, name string) bool {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return false
	}
	attrs := link.Attrs()
	if attrs.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			log.Warn("bringing up NIC", "nic", name, "err", err)
		}
		return false // look again on the next poll, once the driver reports carrier
	}
	return attrs.RawFlags&unix.IFF_LOWER_UP != 0 || attrs.OperState == netlink.OperUp
}

// leaseOn retries DORA on one NIC until it wins a lease or ctx ends.
func leaseOn(ctx context.Context, log *slog.Logger, name string) (*leaseResult, error) {
	for {
		client, err := nclient4.New(name, nclient4.WithTimeout(dhcpAttempt), nclient4.WithRetry(dhcpRetries))
		if err != nil {
			log.Debug("DHCP client", "nic", name, "err", err)
		} else {
			lease, err := requestLease(ctx, client)
			if err == nil {
				return &leaseResult{iface: name, mac: client.InterfaceAddr(), client: client, lease: lease}, nil
			}
			log.Debug("DHCP", "nic", name, "err", err)
			client.Close()
		}
		select {
		case <-time.After(dhcpBackoff):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// configure applies a lease: address, MTU, routes and resolv.conf. The hostname is set
// by useLease, once the agent keeps the lease.
func configure(iface string, info leaseInfo) error {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return err
	}
	if info.MTU > 0 && info.MTU != link.Attrs().MTU {
		if err := netlink.LinkSetMTU(link, info.MTU); err != nil {
			return fmt.Errorf("MTU %d: %w", info.MTU, err)
		}
	}
	if err := netlink.AddrReplace(link, leaseAddr(info)); err != nil {
		return fmt.Errorf("address %s: %w", info.Addr, err)
	}
	for _, r := range info.Routes {
		if err := addRoute(link, info.Addr, r); err != nil {
			return err
		}
	}
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	if len(info.DNS) > 0 {
		if err := os.WriteFile("/etc/resolv.conf", resolvConf(info), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// unconfigure undoes configure on a NIC whose lease the agent does not keep: its routes,
// its address, and the resolv.conf written from the lease.
func unconfigure(iface string, info leaseInfo) error {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return err
	}
	var errs []error
	routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
	errs = append(errs, err)
	for _, r := range routes {
		if r.LinkIndex == link.Attrs().Index {
			errs = append(errs, netlink.RouteDel(&r))
		}
	}
	if err := netlink.AddrDel(link, leaseAddr(info)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		errs = append(errs, err)
	}
	if len(info.DNS) > 0 {
		if err := os.Remove("/etc/resolv.conf"); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func leaseAddr(info leaseInfo) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{
		IP:   info.Addr.Addr().AsSlice(),
		Mask: net.CIDRMask(info.Addr.Bits(), 32),
	}}
}

func addRoute(link netlink.Link, self netip.Prefix, r route) error {
	idx := link.Attrs().Index
	nr := &netlink.Route{LinkIndex: idx, Dst: ipNet(r.Dst)}
	if r.Gateway.IsValid() {
		// A gateway outside the leased subnet (e.g. a /32 lease) must be on-link first.
		if !self.Masked().Contains(r.Gateway) {
			onLink := &netlink.Route{LinkIndex: idx, Dst: ipNet(netip.PrefixFrom(r.Gateway, 32)), Scope: netlink.SCOPE_LINK}
			if err := netlink.RouteReplace(onLink); err != nil {
				return fmt.Errorf("on-link route to gateway %s: %w", r.Gateway, err)
			}
		}
		nr.Gw = r.Gateway.AsSlice()
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	if err := netlink.RouteReplace(nr); err != nil {
		return fmt.Errorf("route %s via %s: %w", r.Dst, r.Gateway, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// renewLoop keeps the lease alive while the agent runs: a long image write must not
// outlive the lease and let the DHCP server hand the address to another machine.
func renewLoop(ctx context.Context, log *slog.Logger, r *leaseResult, renew time.Duration) {
	defer r.client.Close()
	if renew <= 0 {
		return // infinite lease
	}
	wait := renew
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		lease, err := r.client.Renew(ctx, r.lease, dhcpModifiers()...)
		var nak *nclient4.ErrNak
		switch {
		case err == nil:
			r.lease = lease
			info, perr := parseLease(lease.ACK)
			if perr == nil && info.Renew > 0 {
				wait = info.Renew
			} else {
				wait = renew
			}
			log.Debug("DHCP lease renewed", "nic", r.iface, "next", wait)
		case errors.As(err, &nak):
			log.Warn("DHCP server refused to renew the lease; keeping the address", "nic", r.iface, "err", err)
			wait = renewRetryEvery
		default:
			log.Warn("DHCP renewal failed; will retry", "nic", r.iface, "err", err)
			wait = renewRetryEvery
		}
	}
}

// joinNames lists NIC names for a console line.
func joinNames(nics []nicDevice) string {
	names := make([]string, len(nics))
	for i, n := range nics {
		names[i] = n.Name
	}
	return strings.Join(names, ", ")
}
