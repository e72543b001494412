package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds of the search for the coordinator's NIC when the kernel line has no BOOTIF
// (an iPXE build or script that does not pass it). Each NIC costs at most
// probeDHCP + probeReach; the whole search at most probeTotal, after which Prepare
// fails and the agent reboots to try again from the firmware.
const (
	probeLinkWait = 5 * time.Second  // carrier after link up: copper autonegotiation takes 2-4 s
	probeDHCP     = 12 * time.Second // DORA attempts on one NIC (2 s, then 4 s, ...)
	probeReach    = 5 * time.Second  // TCP connect to the coordinator through a leased NIC
	probePause    = 5 * time.Second  // between two rounds over every NIC
	probeTotal    = 5 * time.Minute
)

// probeNICs tries every NIC with a link, lowest PCI address first, one at a time: DHCP,
// configure, then a TCP connect to the coordinator bound to that NIC. It keeps the first
// NIC the coordinator answers through; every other lease is unconfigured and released.
// Without rivet.url there is nothing to check, and the first lease is kept.
func probeNICs(ctx context.Context, log *slog.Logger, drivers *driverLoader, out *progress, urls []string) (*leaseResult, leaseInfo, error) {
	targets, err := coordinatorAddrs(urls)
	if err != nil {
		return nil, leaseInfo{}, err
	}
	out.printf("network: no %s on the kernel command line: trying each NIC with a link, lowest PCI address first, "+
		"until the coordinator (%s) answers through one", bootIFKey, strings.Join(targets, ", "))
	ctx, cancel := context.WithTimeout(ctx, probeTotal)
	defer cancel()
	var last []string // why each NIC of the last round was not used
	for ctx.Err() == nil {
		nics, err := nicsWithLink(ctx, log, drivers, out)
		if err != nil {
			last = append(last[:0], err.Error())
			break
		}
		last = last[:0]
		for _, nic := range nics {
			r, info, why := tryNIC(ctx, log, nic, targets)
			if r != nil {
				_ = setHostname(info) // a machine without its DHCP name still works
				out.printf("network: using %s: %s", nic, why)
				log.Debug("NIC chosen", "nic", nic.Name, "mac", nic.MAC.String(), "pci", nic.PCI, "reason", why)
				return r, info, nil
			}
			out.printf("network: not using %s: %s", nic, why)
			log.Debug("NIC not used", "nic", nic.Name, "mac", nic.MAC.String(), "pci", nic.PCI, "reason", why)
			last = append(last, nic.Name+": "+why)
		}
		select {
		case <-time.After(probePause):
		case <-ctx.Done():
		}
	}
	return nil, leaseInfo{}, fmt.Errorf("no NIC reaches the coordinator (%s) within %s (%s). Check that one NIC is cabled to "+
		"the network the machine PXE-boots from, that its DHCP server answers, and that the coordinator is reachable "+
		"from there; an iPXE script that passes %s (Rivet's does) avoids this search",
		strings.Join(targets, ", "), probeTotal, strings.Join(last, "; "), bootIFKey)
}

// setHostname applies the lease's hostname, if any.
func setHostname(info leaseInfo) error {
	if info.Hostname == "" {
		return nil
	}
	return unix.Sethostname([]byte(info.Hostname))
}

// tryNIC leases an address on one NIC and checks the coordinator answers through it. It
// returns the kept lease and what it reached, or nil and why the NIC is not used (its
// lease, if any, is then unconfigured and released).
func tryNIC(ctx context.Context, log *slog.Logger, nic nicDevice, targets []string) (*leaseResult, leaseInfo, string) {
	dhcpCtx, cancel := context.WithTimeout(ctx, probeDHCP)
	r, err := leaseOn(dhcpCtx, log, nic.Name)
	cancel()
	if err != nil {
		return nil, leaseInfo{}, fmt.Sprintf("no DHCP lease within %s", probeDHCP)
	}
	info, err := parseLease(r.lease.ACK)
	if err != nil {
		r.client.Close()
		return nil, leaseInfo{}, err.Error()
	}
	if err := configure(nic.Name, info); err != nil {
		r.client.Close()
		if uerr := unconfigure(nic.Name, info); uerr != nil {
			log.Warn("removing a lease not kept", "nic", nic.Name, "err", uerr)
		}
		return nil, leaseInfo{}, fmt.Sprintf("configuring %s: %v", info.Addr, err)
	}
	if len(targets) == 0 {
		return r, info, fmt.Sprintf("leased %s (no rivet.url to check)", info.Addr)
	}
	reached, err := reachAny(ctx, nic.Name, targets)
	if err == nil {
		return r, info, fmt.Sprintf("leased %s and the coordinator %s answered through it", info.Addr, reached)
	}
	if rerr := r.releaseFrom(info.Addr.Addr()); rerr != nil {
		log.Warn("releasing a lease not kept", "nic", nic.Name, "err", rerr)
	}
	r.client.Close()
	if uerr := unconfigure(nic.Name, info); uerr != nil {
		log.Warn("removing a lease not kept", "nic", nic.Name, "err", uerr)
	}
	return nil, leaseInfo{}, fmt.Sprintf("leased %s (released) but the coordinator does not answer through it: %v", info.Addr, err)
}

// nicsWithLink brings every NIC up and waits until all have a carrier or probeLinkWait
// has passed with at least one; it returns those with a carrier, in nicOrder.
func nicsWithLink(ctx context.Context, log *slog.Logger, drivers *driverLoader, out *progress) ([]nicDevice, error) {
	start := time.Now()
	lastRescan := start
	var ready []nicDevice
	err := poll(ctx, out, start, func() (bool, string) {
		nics := nicOrder(physicalNICs(), nil)
		if len(nics) == 0 {
			if time.Since(lastRescan) >= driverRescan {
				lastRescan = time.Now()
				drivers.settle()
			}
			return false, "no NIC found (is its driver in the initramfs? see rivet-mkinitramfs --extra-modules)"
		}
		ready = ready[:0]
		for _, n := range nics {
			if linkReady(log, n.Name) {
				ready = append(ready, n)
			}
		}
		if len(ready) == len(nics) || len(ready) > 0 && time.Since(start) >= probeLinkWait {
			return true, ""
		}
		return false, fmt.Sprintf("no link yet on %s; check the cables and switch ports", joinNames(nics))
	})
	return ready, err
}

// coordinatorAddrs turns the rivet.url list into host:port pairs to connect to.
func coordinatorAddrs(urls []string) ([]string, error) {
	var out []string
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Hostname() == "" {
			return nil, fmt.Errorf("coordinator URL %q has no host", raw)
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		out = append(out, net.JoinHostPort(u.Hostname(), port))
	}
	return out, nil
}

// reachAny opens a TCP connection to each target through iface (SO_BINDTODEVICE, so
// that no other NIC's route can answer for it) and returns the first that accepts.
func reachAny(ctx context.Context, iface string, targets []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeReach)
	defer cancel()
	type result struct {
		target string
		err    error
	}
	results := make(chan result, len(targets))
	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
		}); err != nil {
			return err
		}
		return serr
	}}
	for _, target := range targets {
		go func() {
			conn, err := dialer.DialContext(ctx, "tcp", target)
			if err == nil {
				conn.Close()
			}
			results <- result{target, err}
		}()
	}
	var errs []error
	for range targets {
		r := <-results
		if r.err == nil {
			return r.target, nil
		}
		errs = append(errs, r.err)
	}
	return "", errors.Join(errs...)
}
