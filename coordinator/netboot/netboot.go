// Package netboot serves everything a machine needs to boot over the network: DHCP
// (proxy or full, package dhcp), TFTP for the iPXE binary (package tftp), and HTTP for
// the per-machine iPXE script, the kernel and the initramfs. What a machine boots is
// decided per MAC by a Booter, which the coordinator backs with its replicated state.
// See README.md for the decisions.
package netboot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"
	"github.com/rivetmetal/rivet/coordinator/netboot/tftp"
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

// Config configures a Server. ServerIP, BootDir and the three API functions are required.
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
	EnrolToken    func() string   // for rivet.token

	Booter    Booter         // nil: every machine boots the agent
	Mode      string         // ModeProxy (default), ModeFull or ModeOff
	Pool      dhcp.Pool      // ModeFull only
	BootFiles dhcp.BootFiles // iPXE binary names by firmware; defaults in dhcp.BootFiles
	NoTFTP    bool           // do not serve TFTP (another server hands out the iPXE binaries)

	DHCPEvent    func(dhcp.Event)                                                   // optional metrics hook
	TFTPTransfer func(file, client string, bytes int64, d time.Duration, err error) // optional metrics hook
	Logger       *slog.Logger
}

// Server wires DHCP, TFTP and HTTP boot together.
type Server struct {
	cfg     Config
	log     *slog.Logger
	dhcp    *dhcp.Server // nil with ModeOff
	tftp    *tftp.Server // nil with NoTFTP
	handler http.Handler

	mu       sync.RWMutex
	baseURL  string                                 // BootURL, known once the HTTP port is
	transfer func(net.Addr) (net.PacketConn, error) // TFTP transfer sockets in Run's namespace, if it differs
}

// NewServer checks cfg and builds the services. It opens no sockets: Run does.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "netboot"), baseURL: cfg.BootURL}
	s.handler = s.newHandler()
	if cfg.Mode != ModeOff {
		d, err := dhcp.New(dhcp.Config{Mode: dhcp.Mode(cfg.Mode), Interface: cfg.Interface, ServerIP: cfg.ServerIP,
			Booter: cfg.Booter, BootFiles: cfg.BootFiles, ScriptURL: s.ScriptURL, FileURL: s.FileURL, Pool: cfg.Pool,
			OnEvent: cfg.DHCPEvent, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		s.dhcp = d
	}
	if !cfg.NoTFTP {
		t, err := tftp.New(tftp.Config{Root: cfg.BootDir, Logger: cfg.Logger.With("component", "tftp"),
			OnTransfer: cfg.TFTPTransfer, ListenTransfer: s.listenTransfer})
		if err != nil {
			return nil, err
		}
		s.tftp = t
	}
	return s, nil
}

func (c *Config) setDefaults() error {
	if c.ServerIP.To4() == nil {
		return fmt.Errorf("netboot: ServerIP %v: want this coordinator's IPv4 address on the boot network", c.ServerIP)
	}
	if c.BootDir == "" {
		return errors.New("netboot: BootDir is empty; set it to the directory with the kernel, initramfs and iPXE binaries")
	}
	if c.APIURLs == nil || c.CAFingerprint == nil || c.EnrolToken == nil {
		return errors.New("netboot: APIURLs, CAFingerprint and EnrolToken are required (the agent's kernel command line)")
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
	release         func() // the namespace handle for TFTP transfers
}

func (k *sockets) close() {
	if k.release != nil {
		k.release()
	}
	for _, c := range []interface{ Close() error }{k.dhcp, k.pxe, k.tftp, k.http} {
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

// listen opens all sockets, or none.
func (s *Server) listen() (k *sockets, err error) {
	k = &sockets{}
	defer func() {
		if err != nil {
			k.close()
		}
	}()
	if s.dhcp != nil {
		iface, err := dhcp.ResolveInterface(s.cfg.Interface, s.cfg.ServerIP)
		if err != nil {
			return nil, err
		}
		dc, err := dhcp.Listen(iface, dhcp.PortServer)
		if err != nil {
			return nil, err
		}
		k.dhcp = dc
		pc, err := dhcp.Listen(iface, dhcp.PortPXE)
		if err != nil {
			return nil, err
		}
		k.pxe = pc
	}
	if s.tftp != nil {
		transfer, release, err := transferListener()
		if err != nil {
			return nil, err
		}
		k.release = release
		s.mu.Lock()
		s.transfer = transfer
		s.mu.Unlock()
		// The ServerIP, not the wildcard: TFTP requests are unicast to siaddr, and each
		// transfer's socket then binds the same address.
		addr := &net.UDPAddr{IP: s.cfg.ServerIP, Port: 69}
		tc, err := net.ListenUDP("udp4", addr)
		if err != nil {
			return nil, fmt.Errorf("netboot: tftp on %v (needs root or CAP_NET_BIND_SERVICE): %w", addr, err)
		}
		k.tftp = tc
	}
	if s.cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("netboot: http on %s: %w", s.cfg.HTTPAddr, err)
		}
		k.http = ln
		if s.bootURL() == "" { // port 0: now we know the port
			port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
			s.mu.Lock()
			s.baseURL = "http://" + net.JoinHostPort(s.cfg.ServerIP.String(), port)
			s.mu.Unlock()
		}
	}
	return k, nil
}
