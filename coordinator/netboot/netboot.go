// Package netboot serves everything a machine needs to boot over the network: DHCP
// (proxy or full, package dhcp), TFTP for the iPXE binary (package tftp), and HTTP for
// the per-machine iPXE script, the kernel and the initramfs. What a machine boots is
// decided per MAC by a Booter, which the coordinator backs with its replicated state.
// See README.md for the decisions.
package netboot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"
	"github.com/rivetmetal/rivet/coordinator/netboot/tftp"
	"github.com/rivetmetal/rivet/coordinator/netboot/throttle"
	"github.com/rivetmetal/rivet/shared"
)

// Booter decides what a machine boots: the agent (discovered or unknown machines, and
// machines being provisioned), its local disk (installed), or nothing (retired: DHCP
// stays silent). The MachineID is "" for a MAC no machine has registered.
type Booter interface {
	BootFor(mac net.HardwareAddr) (shared.BootTarget, shared.MachineID)
}

// DHCP modes.
const (
	ModeProxy = "proxy" // boot information only; the network's DHCP server gives addresses (default)
	ModeFull  = "full"  // Rivet also gives addresses, from Pool: isolated lab networks only
	ModeOff   = "off"   // no DHCP: the network's DHCP server points PXE clients here itself
)

// Config configures a Server. ServerIP, BootDir, APIURLs and CAFingerprint are required.
type Config struct {
	Interface string // boot network interface; found from ServerIP if empty
	ServerIP  net.IP // this coordinator's address on the boot network: siaddr, TFTP and HTTP host
	// HTTPAddr is where Run serves HTTP boot, e.g. ":8080". Empty: Run serves no HTTP and
	// the caller mounts Handler() on its own server; BootURL is then required.
	HTTPAddr string
	// BootURL is the base URL iPXE fetches scripts and files from. Default:
	// http://ServerIP:<port of HTTPAddr>.
	BootURL string
	BootDir string // kernel, initramfs and iPXE binaries
	Kernel  string // file name in BootDir; default "vmlinuz"
	Initrd  string // file name in BootDir; default "initrd.zst"
	Cmdline string // extra kernel arguments for the agent, e.g. "panic=10 rivet.debug=1"

	APIURLs       func() []string // the coordinators' API URLs, for rivet.url
	CAFingerprint func() string   // "sha256:<hex>", for rivet.ca
	// Tickets issues the one-time ticket of a machine's agent script (rivet.ticket), only
	// for a MAC the boot services expect (see ticket.go). nil: scripts carry no ticket.
	Tickets TicketIssuer

	Booter    Booter         // nil: every machine boots the agent
	Mode      string         // ModeProxy (default), ModeFull or ModeOff
	Pool      dhcp.Pool      // ModeFull only
	BootFiles dhcp.BootFiles // iPXE binary names by firmware; defaults in dhcp.BootFiles
	NoTFTP    bool           // do not serve TFTP (another server hands out the iPXE binaries)
	// PerSource limits the DHCP and the TFTP datagrams one client may send per second;
	// the rest are dropped and counted (Dropped). 0: DefaultPerSource; negative: no limit.
	PerSource int
	Ports     Ports // where DHCP and TFTP listen; zero: the standard ports

	// Optional metrics hooks, called on the packet path: they must not block. The TFTP
	// file name and dhcp.Event's MAC and Reason come from the client: never make them
	// label values (the coordinator maps file names to classes). Dropped and TicketEvent
	// get constants only.
	DHCPEvent    func(dhcp.Event)
	TFTPTransfer func(file, client string, bytes int64, d time.Duration, err error)
	Dropped      func(service, reason string) // service "dhcp" or "tftp"; reason a Reason* constant
	TicketEvent  func(outcome string)         // one of the Ticket* outcomes
	Logger       *slog.Logger
}

// Ports are the UDP ports of the boot services. Only tests on loopback change them.
type Ports struct{ DHCP, PXE, TFTP int }

// DefaultPerSource is how many DHCP, and TFTP, datagrams per second one client may
// send. PXE firmware sends a handful per boot, with retries seconds apart.
const DefaultPerSource = 20

// Server wires DHCP, TFTP and HTTP boot together.
type Server struct {
	cfg     Config
	log     *slog.Logger
	dhcp    *dhcp.Server // nil with ModeOff
	tftp    *tftp.Server // nil with NoTFTP
	handler http.Handler

	quiet  *throttle.Log // lines a client can cause, once per kind per period
	ready  chan struct{} // closed once Run has opened every socket
	expect expectations  // MACs that had a PXE exchange with DHCP lately

	mu         sync.RWMutex
	baseURL    string                                 // BootURL, known once the HTTP port is
	transfer   func(net.Addr) (net.PacketConn, error) // TFTP transfer sockets in Run's namespace, if it differs
	neighbours *neighbourTable                        // proxy mode, while Run runs: who is at an address
}

// logPeriod is how often a line a client can cause may repeat.
const logPeriod = 10 * time.Second

// NewServer checks cfg and builds the services. It opens no sockets: Run does.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "netboot"), baseURL: cfg.BootURL}
	s.quiet = &throttle.Log{Logger: s.log, Period: logPeriod}
	s.ready = make(chan struct{})
	s.expect = expectations{seen: map[[6]byte]time.Time{}, now: time.Now}
	s.handler = s.newHandler()
	perSource := max(cfg.PerSource, 0)
	if cfg.Mode != ModeOff {
		d, err := dhcp.New(dhcp.Config{Mode: dhcp.Mode(cfg.Mode), Interface: cfg.Interface, ServerIP: cfg.ServerIP,
			Booter: cfg.Booter, BootFiles: cfg.BootFiles, ScriptURL: s.ScriptURL, FileURL: s.FileURL, Pool: cfg.Pool,
			OnEvent: s.dhcpEvent, Logger: cfg.Logger, PerSource: perSource})
		if err != nil {
			return nil, err
		}
		s.dhcp = d
	}
	if !cfg.NoTFTP {
		t, err := tftp.New(tftp.Config{Root: cfg.BootDir, Logger: cfg.Logger.With("component", "tftp"),
			OnTransfer: cfg.TFTPTransfer, ListenTransfer: s.listenTransfer,
			Files: cfg.BootFiles.Names(), PerSource: perSource, OnDrop: func(reason string) { s.dropped("tftp", reason) }})
		if err != nil {
			return nil, err
		}
		s.tftp = t
	}
	return s, nil
}

// dhcpEvent notes the MACs DHCP gave boot information to (for tickets), counts drops,
// and passes every event on to the caller's hook.
func (s *Server) dhcpEvent(ev dhcp.Event) {
	switch {
	case ev.Kind == dhcp.EventReply && ev.Target == shared.BootAgent:
		s.expect.saw(ev.MAC)
	case ev.Kind == dhcp.EventDropped:
		s.dropped("dhcp", ev.Reason)
	}
	if s.cfg.DHCPEvent != nil {
		s.cfg.DHCPEvent(ev)
	}
}

func (s *Server) dropped(service, reason string) {
	if s.cfg.Dropped != nil {
		s.cfg.Dropped(service, reason)
	}
}

func (c *Config) setDefaults() error {
	if c.ServerIP.To4() == nil {
		return fmt.Errorf("netboot: ServerIP %v: want this coordinator's IPv4 address on the boot network", c.ServerIP)
	}
	if c.BootDir == "" {
		return errors.New("netboot: BootDir is empty; set it to the directory with the kernel, initramfs and iPXE binaries")
	}
	if c.APIURLs == nil || c.CAFingerprint == nil {
		return errors.New("netboot: APIURLs and CAFingerprint are required (the agent's kernel command line)")
	}
	if c.HTTPAddr == "" && c.BootURL == "" {
		return errors.New("netboot: set HTTPAddr (Run serves HTTP boot) or BootURL (you mount Handler())")
	}
	if c.BootURL == "" {
		if _, port, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			return fmt.Errorf("netboot: HTTPAddr %q: %w", c.HTTPAddr, err)
		} else if port != "0" {
			c.BootURL = "http://" + net.JoinHostPort(c.ServerIP.String(), port)
		}
	}
	if c.Mode == "" {
		c.Mode = ModeProxy
	}
	if c.PerSource == 0 {
		c.PerSource = DefaultPerSource
	}
	c.Ports.DHCP = cmp.Or(c.Ports.DHCP, dhcp.PortServer)
	c.Ports.PXE = cmp.Or(c.Ports.PXE, dhcp.PortPXE)
	c.Ports.TFTP = cmp.Or(c.Ports.TFTP, 69)
	if c.Mode != ModeProxy && c.Mode != ModeFull && c.Mode != ModeOff {
		return fmt.Errorf("netboot: mode %q: want proxy, full or off", c.Mode)
	}
	if c.Kernel == "" {
		c.Kernel = "vmlinuz"
	}
	if c.Initrd == "" {
		c.Initrd = "initrd.zst"
	}
	if !validFileName(c.Kernel) || !validFileName(c.Initrd) || !scriptSafe(c.Kernel) || !scriptSafe(c.Initrd) {
		return fmt.Errorf("netboot: kernel %q and initrd %q must be plain file names in BootDir", c.Kernel, c.Initrd)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Listening is closed once Run has opened every socket (and BootURL's port is known).
func (s *Server) Listening() <-chan struct{} { return s.ready }

// Handler serves the boot scripts and files, for mounting on another HTTP server.
func (s *Server) Handler() http.Handler { return s.handler }

// DHCPStats returns the DHCP counters (zero with ModeOff).
func (s *Server) DHCPStats() dhcp.Stats {
	if s.dhcp == nil {
		return dhcp.Stats{}
	}
	return s.dhcp.Stats()
}

// TFTPStats returns the TFTP counters (zero with NoTFTP).
func (s *Server) TFTPStats() tftp.Stats {
	if s.tftp == nil {
		return tftp.Stats{}
	}
	return s.tftp.Stats()
}

// listenTransfer opens the socket of one TFTP transfer next to the listener.
func (s *Server) listenTransfer(listener net.Addr) (net.PacketConn, error) {
	s.mu.RLock()
	inRunNamespace := s.transfer
	s.mu.RUnlock()
	if inRunNamespace != nil {
		return inRunNamespace(listener)
	}
	laddr := &net.UDPAddr{}
	if u, ok := listener.(*net.UDPAddr); ok {
		laddr.IP = u.IP
	}
	return net.ListenUDP("udp4", laddr)
}

func (s *Server) bootURL() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.baseURL
}

// sockets are what Run opens before it serves anything.
type sockets struct {
	dhcp, pxe, tftp net.PacketConn
	http            net.Listener
	neighbours      *neighbourTable
	release         func() // the namespace handle for TFTP transfers
}

// close closes what was opened; each field is nil until its socket opens.
func (k *sockets) close() {
	if k.release != nil {
		k.release()
	}
	if k.neighbours != nil {
		k.neighbours.close()
	}
	for _, c := range []io.Closer{k.dhcp, k.pxe, k.tftp, k.http} {
		if c != nil {
			c.Close()
		}
	}
}

// Run opens every socket (in the network namespace of the calling thread, before it
// returns from set-up: a caller may run it on a thread locked into a namespace), then
// serves until ctx ends or a service fails.
func (s *Server) Run(ctx context.Context) error {
	k, err := s.listen()
	if err != nil {
		return err
	}
	close(s.ready)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	var httpSrv *http.Server
	if s.dhcp != nil {
		wg.Go(func() { errc <- s.dhcp.Serve(ctx, k.dhcp, k.pxe) })
	}
	if s.tftp != nil {
		wg.Go(func() {
			if err := s.tftp.Serve(k.tftp); err != nil && !errors.Is(err, tftp.ErrServerClosed) {
				errc <- fmt.Errorf("netboot: tftp: %w", err)
			}
		})
	}
	if k.http != nil {
		httpSrv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
		wg.Go(func() {
			if err := httpSrv.Serve(k.http); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("netboot: http: %w", err)
			}
		})
	}
	s.log.Info("network boot serving", "mode", s.cfg.Mode, "server_ip", s.cfg.ServerIP, "boot_url", s.bootURL(),
		"tftp", s.tftp != nil, "http", k.http != nil)

	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
	}
	cancel() // stops DHCP
	if s.tftp != nil {
		s.tftp.Close()
	}
	if httpSrv != nil {
		shutCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
		if httpSrv.Shutdown(shutCtx) != nil {
			httpSrv.Close() // downloads still running after 5 s are cut
		}
		done()
	}
	wg.Wait()
	s.mu.Lock()
	s.neighbours = nil
	s.mu.Unlock()
	if k.neighbours != nil {
		k.neighbours.close()
	}
	if k.release != nil {
		k.release()
	}
	close(errc)
	for err := range errc {
		if first == nil {
			first = err
		}
	}
	return first
}

// listen opens all sockets, or none. It opens them in the calling thread's network
// namespace; so is the netlink socket that reads the boot interface's neighbour table.
func (s *Server) listen() (*sockets, error) {
	k := &sockets{}
	if err := s.open(k); err != nil {
		k.close()
		return nil, err
	}
	return k, nil
}

func (s *Server) open(k *sockets) error {
	if s.dhcp != nil {
		iface, err := dhcp.ResolveInterface(s.cfg.Interface, s.cfg.ServerIP)
		if err != nil {
			return err
		}
		// Each socket is stored only once open: a nil *UDPConn in an interface is not nil.
		dc, err := dhcp.Listen(iface, s.cfg.Ports.DHCP)
		if err != nil {
			return err
		}
		k.dhcp = dc
		pc, err := dhcp.Listen(iface, s.cfg.Ports.PXE)
		if err != nil {
			return err
		}
		k.pxe = pc
		if s.cfg.Mode == ModeProxy {
			if k.neighbours, err = openNeighbourTable(iface); err != nil {
				return err
			}
		}
	}
	if s.tftp != nil {
		transfer, release, err := transferListener()
		if err != nil {
			return err
		}
		k.release = release
		s.mu.Lock()
		s.transfer = transfer
		s.mu.Unlock()
		// The ServerIP, not the wildcard: TFTP requests are unicast to siaddr, and each
		// transfer's socket then binds the same address.
		addr := &net.UDPAddr{IP: s.cfg.ServerIP, Port: s.cfg.Ports.TFTP}
		tc, err := net.ListenUDP("udp4", addr)
		if err != nil {
			return fmt.Errorf("netboot: tftp on %v (needs root or CAP_NET_BIND_SERVICE; is another TFTP server running?): %w", addr, err)
		}
		k.tftp = tc
	}
	if s.cfg.HTTPAddr != "" {
		addr := s.httpListenAddr()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("netboot: http on %s (is the port taken? set --boot-http-addr): %w", addr, err)
		}
		k.http = ln
		if s.bootURL() == "" { // port 0: now we know the port
			port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
			s.mu.Lock()
			s.baseURL = "http://" + net.JoinHostPort(s.cfg.ServerIP.String(), port)
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	s.neighbours = k.neighbours
	s.mu.Unlock()
	return nil
}

// httpListenAddr is HTTPAddr, on the ServerIP when it names no host: HTTP boot is for
// the boot network, not for every network this host is on. "0.0.0.0:8080" still means all.
func (s *Server) httpListenAddr() string {
	host, port, err := net.SplitHostPort(s.cfg.HTTPAddr)
	if err != nil || host != "" {
		return s.cfg.HTTPAddr // net.Listen reports the error
	}
	return net.JoinHostPort(s.cfg.ServerIP.String(), port)
}
