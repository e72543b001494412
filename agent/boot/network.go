package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Timings of the network bring-up. The agent keeps trying until its context ends:
// a server whose switch port is still negotiating must not give up after one round.
const (
	linkPoll        = 200 * time.Millisecond
	driverRescan    = time.Second      // look for late devices while no NIC has appeared
	statusEvery     = 10 * time.Second // console line while still waiting
	dhcpAttempt     = 2 * time.Second  // first DHCP timeout; nclient4 doubles it per retry
	dhcpRetries     = 3
	dhcpBackoff     = time.Second
	renewRetryEvery = 30 * time.Second
)

// netState is one physical NIC as the bring-up loop sees it.
type netState struct {
	name    string
	started bool   // DHCP client running
	status  string // for the "waiting" console line
}

// leaseResult is a lease won on one NIC, with the client kept open for renewals.
type leaseResult struct {
	iface  string
	mac    net.HardwareAddr
	client *nclient4.Client
	lease  *nclient4.Lease
}

// bringUpNetwork brings up lo and every physical NIC, runs DHCP on each NIC that has a
// link, and configures the first NIC that gets a lease. NICs without a lease are left up
// and unconfigured.
func bringUpNetwork(ctx context.Context, log *slog.Logger, drivers *driverLoader, out *progress) (*leaseResult, leaseInfo, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		if err := netlink.LinkSetUp(lo); err != nil {
			log.Warn("bringing up lo", "err", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	results := make(chan *leaseResult)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait() // the other NICs' clients notice the cancel and close
	}()
	nics := map[string]*netState{}
	start := time.Now()
	lastRescan, lastStatus := start, start
	tick := time.NewTicker(linkPoll)
	defer tick.Stop()
	for {
		for _, name := range physicalNICs() {
			st := nics[name]
			if st == nil {
				st = &netState{name: name, status: "no link"}
				nics[name] = st
			}
			if st.started || !linkReady(log, name) {
				continue
			}
			st.started, st.status = true, "no DHCP answer"
			wg.Add(1)
			go func() {
				defer wg.Done()
				runDHCP(ctx, log, name, results)
			}()
		}
		now := time.Now()
		if len(nics) == 0 && now.Sub(lastRescan) >= driverRescan {
			lastRescan = now
			if loaded := drivers.settle(); len(loaded) > 0 {
				log.Debug("late drivers loaded", "modules", loaded)
			}
		}
		if now.Sub(lastStatus) >= statusEvery {
			lastStatus = now
			out.printf("waiting for network (%s): %s", now.Sub(start).Round(time.Second), describeNICs(nics))
		}
		select {
		case r := <-results:
			cancel()
			info, err := parseLease(r.lease.ACK)
			if err == nil {
				err = configure(r.iface, info)
			}
			if err != nil {
				r.client.Close()
				return nil, leaseInfo{}, fmt.Errorf("configuring %s: %w", r.iface, err)
			}
			return r, info, nil
		case <-tick.C:
		case <-ctx.Done():
			return nil, leaseInfo{}, fmt.Errorf("no DHCP lease on any NIC (%s): %w", describeNICs(nics), ctx.Err())
		}
	}
}

// physicalNICs lists interfaces backed by a device (a PCI or virtio NIC), skipping
// lo, bridges, tunnels and other virtual links. Sorted, so eth0 is tried before eth1.
func physicalNICs() []string {
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join("/sys/class/net", e.Name(), "device")); err == nil {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
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

// runDHCP retries DORA on one NIC until it wins a lease or ctx ends.
func runDHCP(ctx context.Context, log *slog.Logger, name string, results chan<- *leaseResult) {
	for ctx.Err() == nil {
		client, err := nclient4.New(name, nclient4.WithTimeout(dhcpAttempt), nclient4.WithRetry(dhcpRetries))
		if err != nil {
			log.Debug("DHCP client", "nic", name, "err", err)
		} else {
			lease, err := requestLease(ctx, client)
			if err == nil {
				select {
				case results <- &leaseResult{iface: name, mac: client.InterfaceAddr(), client: client, lease: lease}:
					return
				case <-ctx.Done():
				}
			} else {
				log.Debug("DHCP", "nic", name, "err", err)
			}
			client.Close()
		}
		select {
		case <-time.After(dhcpBackoff):
		case <-ctx.Done():
		}
	}
}

func describeNICs(nics map[string]*netState) string {
	if len(nics) == 0 {
		return "no NIC found (is its driver in the initramfs? see rivet-mkinitramfs --extra-modules)"
	}
	names := make([]string, 0, len(nics))
	for n := range nics {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, n+" "+nics[n].status)
	}
	return strings.Join(parts, ", ")
}

// configure applies a lease: address, MTU, routes, resolv.conf and hostname.
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
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   info.Addr.Addr().AsSlice(),
		Mask: net.CIDRMask(info.Addr.Bits(), 32),
	}}
	if err := netlink.AddrReplace(link, addr); err != nil {
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
	if info.Hostname != "" {
		_ = unix.Sethostname([]byte(info.Hostname))
	}
	return nil
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
