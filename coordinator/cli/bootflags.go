package cli

import (
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"
)

// bootOptions are the coordinator's boot-service flags.
type bootOptions struct {
	mode, iface, dir, httpAddr, cmdline string
	poolStart, poolEnd, router          string
}

func bootFlags(fs *flag.FlagSet) *bootOptions {
	b := &bootOptions{}
	fs.StringVar(&b.mode, "boot-mode", "", "boot services: proxy (beside the site's DHCP server), full (DHCP with a lease pool, for isolated labs) or off; default proxy when --boot-interface is set, else off")
	fs.StringVar(&b.iface, "boot-interface", "", "network interface machines PXE-boot on")
	fs.StringVar(&b.dir, "boot-dir", "", "kernel, initramfs and iPXE binaries (default DATA_DIR/boot)")
	fs.StringVar(&b.httpAddr, "boot-http-addr", ":8080", "HTTP boot listen address (iPXE scripts, kernel, initramfs); without a host it listens on the --advertise address only (0.0.0.0:8080: every interface)")
	// No console= by default: the agent's script already ends its consoles with
	// ttyS0 (netboot's agentCmdline), and the last console= becomes /dev/console.
	fs.StringVar(&b.cmdline, "boot-cmdline", "", "extra kernel arguments for the agent, after Rivet's own (console=tty0 console=ttyS0,115200n8: the last console= is /dev/console, so a console= here wins)")
	fs.StringVar(&b.poolStart, "boot-pool-start", "", "full mode: first address of the lease pool")
	fs.StringVar(&b.poolEnd, "boot-pool-end", "", "full mode: last address of the lease pool")
	fs.StringVar(&b.router, "boot-router", "", "full mode: default gateway handed to clients")
	return b
}

// config returns the boot services' configuration, nil when they are off. advertise is
// the --advertise address: the boot server machines are sent to.
func (b *bootOptions) config(advertise string) (*netboot.Config, error) {
	mode := b.mode
	if mode == "" {
		mode = netboot.ModeOff
		if b.iface != "" {
			mode = netboot.ModeProxy
		}
	}
	switch mode {
	case netboot.ModeOff:
		return nil, nil
	case netboot.ModeProxy, netboot.ModeFull:
	default:
		return nil, fmt.Errorf("--boot-mode %q: want proxy, full or off", mode)
	}
	if err := checkAdvertise(advertise, b.iface); err != nil {
		return nil, err
	}
	cfg := &netboot.Config{Mode: mode, Interface: b.iface, BootDir: b.dir, HTTPAddr: b.httpAddr, Cmdline: b.cmdline}
	if mode == netboot.ModeFull {
		start, end := net.ParseIP(b.poolStart), net.ParseIP(b.poolEnd)
		if start == nil || end == nil {
			return nil, fmt.Errorf("--boot-mode full needs --boot-pool-start and --boot-pool-end")
		}
		cfg.Pool = dhcp.Pool{Start: start, End: end, Router: net.ParseIP(b.router), LeaseTime: time.Hour}
	}
	return cfg, nil
}

// checkAdvertise refuses boot services that would send machines to a loopback or
// unspecified address (--advertise defaults to 127.0.0.1), and names the addresses of
// the boot interface as the likely fix.
func checkAdvertise(advertise, iface string) error {
	ip := net.ParseIP(advertise)
	if ip != nil && ip.To4() != nil && !ip.IsLoopback() && !ip.IsUnspecified() {
		return nil
	}
	hint := "this host's IPv4 address on the boot network"
	if addrs := interfaceIPv4s(iface); len(addrs) > 0 {
		hint = "e.g. --advertise " + strings.Join(addrs, " or --advertise ")
	}
	return fmt.Errorf("the boot services need --advertise set to the address machines boot from (%s); --advertise %q would send them to themselves", hint, advertise)
}

func interfaceIPv4s(name string) []string {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil
	}
	addrs, _ := ifc.Addrs()
	var out []string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			out = append(out, n.IP.String())
		}
	}
	return out
}
