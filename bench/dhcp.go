package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
)

// DHCPOptions configures the proxyDHCP bench. Zero values take the defaults.
type DHCPOptions struct {
	Requests int           // PXE DISCOVERs per round; default 20000
	Window   int           // requests in flight at most; default 64
	Rounds   int           // rounds per server, alternating; the median is reported; default 3
	LossWait time.Duration // a request unanswered this long counts as lost; default 200 ms
	Dnsmasq  string        // dnsmasq binary; default dnsmasq from PATH (package dnsmasq-base)
}

func (o *DHCPOptions) dhcpDefaults() {
	orDefault(&o.Requests, 20000)
	orDefault(&o.Window, 64)
	orDefault(&o.Rounds, 3)
	orDefault(&o.LossWait, 200*time.Millisecond)
	orDefault(&o.Dnsmasq, "dnsmasq")
}

// dhcpServer is one side of the comparison: start serves on the pair, stop ends it.
type dhcpServer struct {
	name  string
	start func(p *dhcptest.Pair) (stop func(), err error)
}

// DHCP measures proxyDHCP OFFERs per second, Rivet against dnsmasq in proxy mode, with
// the same workload: BIOS PXE DISCOVERs (each from its own MAC) broadcast by a load
// generator in one network namespace to the server in another, over a veth pair, with
// at most Window requests unanswered. Needs root (namespaces, port 67).
func DHCP(ctx context.Context, w io.Writer, opts DHCPOptions) error {
	opts.dhcpDefaults()
	if os.Geteuid() != 0 {
		return errors.New("dhcp bench: needs root (network namespaces and port 67)")
	}
	dnsmasq, err := exec.LookPath(opts.Dnsmasq)
	if err != nil {
		return fmt.Errorf("dhcp bench: %s not found: %w (apt-get install dnsmasq-base)", opts.Dnsmasq, err)
	}
	pair, err := dhcptest.NewPair("rvb", 30)
	if err != nil {
		return fmt.Errorf("dhcp bench: %w", err)
	}
	defer pair.Close()
	var client *dhcptest.Client
	if err := dhcptest.Do(pair.ClientNS, func() (err error) {
		client, err = dhcptest.NewClient(pair.ClientIf, nil, dhcp.PortClient)
		return err
	}); err != nil {
		return fmt.Errorf("dhcp bench: client socket: %w", err)
	}
	defer client.Close()

	servers := [2]dhcpServer{{"rivet", dhcpStartRivet}, {"dnsmasq", func(p *dhcptest.Pair) (func(), error) {
		return dhcpStartDnsmasq(ctx, dnsmasq, p)
	}}}
	rounds := [2][]dhcptest.LoadResult{}
	xid := uint32(1 << 24)
	for range opts.Rounds {
		for i, srv := range servers {
			r, err := dhcpRound(ctx, pair, client, srv, xid, opts)
			if err != nil {
				return fmt.Errorf("dhcp bench: %s: %w", srv.name, err)
			}
			xid += uint32(opts.Requests) + 1000 // late replies of a round never count in the next
			rounds[i] = append(rounds[i], r)
		}
	}
	med := [2]dhcptest.LoadResult{}
	for i := range rounds {
		med[i] = medianBy(rounds[i], dhcptest.LoadResult.PerSecond)
	}
	_, err = fmt.Fprintf(w, "rivet-figure: boot proxydhcp requests=%d window=%d rivet_rps=%.0f dnsmasq_rps=%.0f "+
		"rivet_lost=%d dnsmasq_lost=%d ratio=%.2fx\n",
		opts.Requests, opts.Window, med[0].PerSecond(), med[1].PerSecond(),
		med[0].Sent-med[0].Replies, med[1].Sent-med[1].Replies, med[0].PerSecond()/med[1].PerSecond())
	return err
}

// dhcpRound starts a server, waits until it answers, floods it and stops it. Rivet and
// dnsmasq both need port 67 on the same interface, so only one runs at a time.
func dhcpRound(ctx context.Context, p *dhcptest.Pair, c *dhcptest.Client, srv dhcpServer, xid uint32, opts DHCPOptions) (dhcptest.LoadResult, error) {
	stop, err := srv.start(p)
	if err != nil {
		return dhcptest.LoadResult{}, err
	}
	defer stop()
	if err := dhcpWaitReady(ctx, c, xid-1); err != nil {
		return dhcptest.LoadResult{}, err
	}
	pkts := make([][]byte, opts.Requests)
	for i := range pkts {
		pkts[i] = dhcptest.Request{XID: xid + uint32(i), MAC: dhcptest.MAC(i), Arch: 0, PXE: true}.Bytes()
	}
	r, err := c.Flood(ctx, pkts, xid, dhcptest.Broadcast, opts.Window, opts.LossWait)
	if err != nil {
		return r, err
	}
	if r.Replies < r.Sent/2 {
		return r, fmt.Errorf("only %d of %d DISCOVERs answered", r.Replies, r.Sent)
	}
	return r, nil
}

// dhcpWaitReady sends a DISCOVER until the server offers (it may still be binding).
func dhcpWaitReady(ctx context.Context, c *dhcptest.Client, xid uint32) error {
	req := dhcptest.Request{XID: xid, MAC: dhcptest.MAC(1 << 20), Arch: 0, PXE: true}.Bytes()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		if err := c.Send(req, dhcptest.Broadcast); err != nil {
			return err
		}
		if _, _, err := c.Receive(xid, 200*time.Millisecond); err == nil {
			return nil
		}
	}
	return errors.New("no OFFER within 15 s of starting")
}

func dhcpStartRivet(p *dhcptest.Pair) (func(), error) {
	srv, err := dhcp.New(dhcp.Config{Mode: dhcp.ModeProxy, Interface: p.ServerIf, ServerIP: p.ServerIP,
		ScriptURL: func(mac net.HardwareAddr) string {
			return "http://" + p.ServerIP.String() + ":8080/boot/" + mac.String() + ".ipxe"
		}})
	if err != nil {
		return nil, err
	}
	var dc, pc *net.UDPConn
	if err := dhcptest.Do(p.ServerNS, func() (err error) {
		if dc, err = dhcp.Listen(p.ServerIf, dhcp.PortServer); err != nil {
			return err
		}
		pc, err = dhcp.Listen(p.ServerIf, dhcp.PortPXE)
		return err
	}); err != nil {
		if dc != nil {
			dc.Close()
		}
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, dc, pc) }()
	return func() { cancel(); <-served }, nil
}

// dhcpStartDnsmasq runs dnsmasq as a proxyDHCP for BIOS PXE clients inside the server
// namespace: no DNS, no ping, no lease file, routine logging off.
func dhcpStartDnsmasq(ctx context.Context, bin string, p *dhcptest.Pair) (func(), error) {
	dir, err := os.MkdirTemp("", "rvb-dnsmasq-")
	if err != nil {
		return nil, err
	}
	subnet := p.ServerIP.Mask(net.CIDRMask(24, 32))
	cmd := dhcptest.Exec(p.ServerNS, bin, "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface="+p.ServerIf, "--bind-interfaces", "--except-interface=lo",
		"--dhcp-range="+subnet.String()+",proxy", "--pxe-service=x86PC,Rivet,undionly",
		"--no-ping", "--quiet-dhcp", "--leasefile-ro", "--log-facility=-",
		"--pid-file="+filepath.Join(dir, "pid"), "--user=root")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		os.RemoveAll(dir)
	}
	select {
	case <-exited:
		stop()
		return nil, fmt.Errorf("%s exited at start: %s", bin, bytes.TrimSpace(stderr.Bytes()))
	case <-time.After(50 * time.Millisecond):
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
	return stop, nil
}
