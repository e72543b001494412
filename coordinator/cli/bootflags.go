package cli

import (
	"flag"
	"fmt"
	"net"
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
	fs.StringVar(&b.httpAddr, "boot-http-addr", ":8080", "HTTP boot listen address (iPXE scripts, kernel, initramfs)")
	// No console= by default: the agent's script already ends its consoles with
	// ttyS0 (netboot's agentCmdline), and the last console= becomes /dev/console.
	fs.StringVar(&b.cmdline, "boot-cmdline", "", "extra kernel arguments for the agent, after Rivet's own (console=tty0 console=ttyS0,115200n8: the last console= is /dev/console, so a console= here wins)")
	fs.StringVar(&b.poolStart, "boot-pool-start", "", "full mode: first address of the lease pool")
	fs.StringVar(&b.poolEnd, "boot-pool-end", "", "full mode: last address of the lease pool")
	fs.StringVar(&b.router, "boot-router", "", "full mode: default gateway handed to clients")
	return b
}

func (b *bootOptions) config() (*netboot.Config, error) {
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
