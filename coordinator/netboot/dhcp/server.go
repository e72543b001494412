// Package dhcp is Rivet's DHCP service for network boot. In proxy mode (the default) it
// answers PXE clients with boot information only and leaves addresses to the network's
// own DHCP server; in full mode it also hands out addresses from an in-memory pool, for
// isolated lab networks. Which machine boots what is asked of a Booter, per MAC.
//
// Packets are encoded and decoded with github.com/insomniacslk/dhcp/dhcpv4. The sockets
// and the read loop are Rivet's own: server4.Server starts a goroutine per datagram and
// sets SO_REUSEPORT, which would let two servers share port 67 without a word.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot/throttle"
	"github.com/rivetmetal/rivet/shared"
)

// Mode selects proxy or full DHCP.
type Mode string

const (
	ModeProxy Mode = "proxy" // boot information only; another server gives addresses
	ModeFull  Mode = "full"  // addresses from Pool, plus boot information
)

// Standard ports. PortPXE is the PXE boot server port ("ProxyDHCP" requests after the offer).
const (
	PortServer = 67
	PortClient = 68
	PortPXE    = 4011
)

// Booter decides, per MAC, what a machine boots. It is the same method as
// netboot.Booter; it is repeated here so that this package depends on nothing above it.
type Booter interface {
	BootFor(mac net.HardwareAddr) (shared.BootTarget, shared.MachineID)
}

// Config is what a Server needs. ServerIP and ScriptURL are required.
type Config struct {
	Mode      Mode
	Interface string // the server answers on this interface only; found from ServerIP if empty
	ServerIP  net.IP // this server's address on that interface: siaddr and option 54
	Booter    Booter // nil: every machine boots the agent
	BootFiles BootFiles
	// ScriptURL is the HTTP URL of a machine's iPXE script, handed to iPXE as its
	// boot file name.
	ScriptURL func(mac net.HardwareAddr) string
	// FileURL is the HTTP URL of a file in the boot directory. UEFI HTTP boot clients
	// get the iPXE binary from there; nil leaves them unanswered.
	FileURL func(name string) string
	Pool    Pool        // full mode only
	OnEvent func(Event) // optional hook for metrics; called on the packet path
	// PerSource limits the datagrams one client (source address and MAC) may send per
	// second; the rest are dropped (EventDropped). 0: no limit.
	PerSource int
	Logger    *slog.Logger
	Now       func() time.Time // for tests; time.Now if nil
}

// Server answers DHCP requests. It is safe for concurrent use.
type Server struct {
	cfg      Config
	serverIP [4]byte
	leases   *leases // full mode only
	stats    counters
	log      *slog.Logger
	warn     *throttle.Log               // warnings a client can cause, once per kind per period
	limit    *throttle.Window[sourceKey] // nil: no per-source limit
}

// sourceKey is one client as the rate limit sees it: the source address (a relay's, or
// 0.0.0.0 before the client has one) and the MAC in chaddr.
type sourceKey [10]byte

// Bounds of the per-source limit and of warnings a client can trigger.
const (
	maxSources  = 4096
	warnPeriod  = 10 * time.Second
	chaddrStart = 28 // offset of chaddr in a BOOTP header
)

// New checks cfg and returns a Server. It opens no sockets: see ListenAndServe and Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeProxy
	}
	if cfg.Mode != ModeProxy && cfg.Mode != ModeFull {
		return nil, fmt.Errorf("dhcp: mode %q: want proxy or full", cfg.Mode)
	}
	ip4 := cfg.ServerIP.To4()
	if ip4 == nil || ip4.IsUnspecified() {
		return nil, fmt.Errorf("dhcp: server IP %v: want this server's IPv4 address on the boot network", cfg.ServerIP)
	}
	if cfg.ScriptURL == nil {
		return nil, errors.New("dhcp: ScriptURL is required (the HTTP URL of a machine's iPXE script)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.BootFiles = cfg.BootFiles.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "dhcp", "mode", string(cfg.Mode))}
	s.warn = &throttle.Log{Logger: s.log, Period: warnPeriod}
	if cfg.PerSource > 0 {
		s.limit = &throttle.Window[sourceKey]{Max: cfg.PerSource, Period: time.Second, MaxKeys: maxSources, Now: cfg.Now}
	}
	copy(s.serverIP[:], ip4)
	if cfg.Mode == ModeFull {
		if err := s.setUpPool(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Server) setUpPool() error {
	p := &s.cfg.Pool
	if p.Netmask == nil {
		p.Netmask = net.CIDRMask(24, 32)
	}
	if ones, bits := p.Netmask.Size(); bits != 32 || ones == 0 {
		return fmt.Errorf("dhcp: pool netmask %v is not an IPv4 netmask", p.Netmask)
	}
	if p.LeaseTime <= 0 {
		p.LeaseTime = defaultLeaseTime
	}
	l, err := newLeases(*p)
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	subnet := net.IPNet{IP: s.cfg.ServerIP.To4().Mask(p.Netmask), Mask: p.Netmask}
	if !subnet.Contains(p.Start) || !subnet.Contains(p.End) {
		return fmt.Errorf("dhcp: pool %v-%v is outside the server's subnet %v", p.Start, p.End, &subnet)
	}
	if _, in := l.contains(s.cfg.ServerIP); in {
		return fmt.Errorf("dhcp: the pool %v-%v contains the server's own address %v", p.Start, p.End, s.cfg.ServerIP)
	}
	s.leases = l
	return nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// ListenAndServe opens ports 67 and 4011 on the configured interface and serves until
// ctx ends. Both sockets are opened before it starts serving, in the network namespace
// of the calling thread.
func (s *Server) ListenAndServe(ctx context.Context) error {
	iface, err := ResolveInterface(s.cfg.Interface, s.cfg.ServerIP)
	if err != nil {
		return err
	}
	dhcpConn, err := Listen(iface, PortServer)
	if err != nil {
		return err
	}
	pxeConn, err := Listen(iface, PortPXE)
	if err != nil {
		dhcpConn.Close()
		return err
	}
	return s.Serve(ctx, dhcpConn, pxeConn)
}

// Serve answers DHCP on dhcpConn (port 67 semantics) and PXE boot server requests on
// pxeConn (port 4011 semantics; may be nil) until ctx ends, then closes both. One
// goroutine reads and answers each socket: a reply costs ~5 µs, and a second reader on
// the same socket measured 2.3x slower (both wake for every datagram and fight over the
// socket's lock). The Booter is therefore called on the packet path and must not block.
func (s *Server) Serve(ctx context.Context, dhcpConn, pxeConn net.PacketConn) error {
	s.log.Info("serving DHCP", "addr", dhcpConn.LocalAddr(), "server_ip", s.cfg.ServerIP)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conns := map[int]net.PacketConn{PortServer: dhcpConn}
	if pxeConn != nil {
		conns[PortPXE] = pxeConn
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(conns))
	for port, conn := range conns {
		wg.Go(func() {
			if err := s.readLoop(ctx, conn, port); err != nil {
				errc <- err
				cancel()
			}
		})
	}
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	close(errc)
	return <-errc // nil when ctx ended and no loop failed
}

// maxRequest is the largest datagram accepted. DHCP clients send at most what fits in
// one Ethernet frame; anything larger is garbage or an attack.
const maxRequest = 1500

func (s *Server) readLoop(ctx context.Context, conn net.PacketConn, port int) error {
	buf := make([]byte, maxRequest+1) // one spare byte tells an oversized datagram apart
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dhcp: reading port %d: %w", port, err)
		}
		udp, _ := from.(*net.UDPAddr)
		if !s.allow(buf[:n], udp) {
			s.stats.dropped.Add(1)
			s.emit(Event{Kind: EventDropped, Port: port, Reason: ReasonRateLimited})
			continue
		}
		reply, to := s.respond(buf[:n], port, udp)
		if reply == nil {
			continue
		}
		if _, err := conn.WriteTo(reply, to); err != nil {
			s.stats.sendErrors.Add(1)
			s.warn.Warn("cannot send a DHCP reply", "to", to.String(), "err", err)
		}
	}
}

// allow applies the per-source limit to one datagram, before any decoding.
func (s *Server) allow(data []byte, from *net.UDPAddr) bool {
	if s.limit == nil {
		return true
	}
	var k sourceKey
	if from != nil {
		copy(k[:4], from.IP.To4())
	}
	if len(data) >= chaddrStart+6 {
		copy(k[4:], data[chaddrStart:chaddrStart+6])
	}
	return s.limit.Allow(k)
}

// LeasedTo returns the address mac holds an unexpired lease on (full mode), or nil.
func (s *Server) LeasedTo(mac net.HardwareAddr) net.IP {
	if s.leases == nil {
		return nil
	}
	return s.leases.lookup(mac.String(), s.cfg.Now())
}
