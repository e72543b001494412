package tftp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot/throttle"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxTransfers  = 1000
	DefaultTimeout       = time.Second
	DefaultRetries       = 5
	DefaultMaxBlockSize  = 1468 // 1500-byte Ethernet MTU - 20 (IPv4) - 8 (UDP) - 4 (TFTP)
	DefaultMaxWindowSize = 64
	DefaultCacheFileSize = 4 << 20
	DefaultCacheSize     = 64 << 20
)

// Config configures a Server. Only Root is required.
type Config struct {
	// Root is the boot directory. Nothing outside it is ever served.
	Root string
	// Logger receives one line per transfer; nil discards.
	Logger *slog.Logger
	// MaxTransfers bounds transfers in progress. A request beyond it is dropped without an
	// answer: PXE firmware retries an unanswered request, but gives up on an ERROR.
	MaxTransfers int
	// Timeout is the first retransmission timeout; each retry doubles it, up to 8x.
	// A client's "timeout" option (RFC 2349) replaces it for that transfer.
	Timeout time.Duration
	// Retries is how many times a packet is sent again before the transfer is abandoned.
	Retries int
	// MaxBlockSize caps the blksize option (RFC 2348). The default fits a 1500-byte MTU;
	// set it to the boot interface's MTU minus 32 on jumbo-frame networks (at most 65464).
	// A larger block than the path carries would be fragmented, and on a busy boot LAN one
	// lost fragment costs the whole block.
	MaxBlockSize int
	// MaxWindowSize caps the windowsize option (RFC 7440).
	MaxWindowSize int
	// CacheFileSize is the largest file kept in memory; CacheSize bounds all cached bytes.
	CacheFileSize int64
	CacheSize     int64
	// OnTransfer, if set, is called once per read or write request when it ends, with the
	// bytes the client acknowledged and nil or the reason it failed (compare with errors.Is
	// against the Err* values). It runs on the server's goroutines: it must not block.
	OnTransfer func(file, clientAddr string, bytes int64, dur time.Duration, err error)
	// ListenTransfer opens the socket of one transfer (its own TID, RFC 1350). The default
	// binds UDP to the listener's IP and port 0. Set it when the listener was opened in
	// another network namespace than the goroutines that call it.
	ListenTransfer func(listener net.Addr) (net.PacketConn, error)
	// Files, if set, are the only names served: any other request is "file not found"
	// before the boot directory is looked at. nil serves every regular file under Root.
	Files []string
	// PerSource limits the datagrams one source address may send to the request port per
	// second; the rest are dropped unanswered (OnDrop, Stats.Errors["rate_limited"]).
	// 0: no limit.
	PerSource int
	// OnDrop, if set, is called for each datagram dropped by PerSource, with the reason.
	OnDrop func(reason string)
}

// ReasonRateLimited is what OnDrop is called with for a datagram over PerSource.
const ReasonRateLimited = "rate_limited"

// Bounds of the per-source limit and of the log lines a client can cause.
const (
	maxSources = 4096
	logPeriod  = 10 * time.Second
)

// Reasons a request or transfer failed. They are the keys of Stats.Errors and the
// sentinels passed to OnTransfer (use errors.Is).
var (
	ErrFileNotFound    = errors.New("file not found")
	ErrAccessViolation = errors.New("access violation")
	ErrWriteRefused    = errors.New("write request refused: the server is read-only")
	ErrBadMode         = errors.New("transfer mode not supported: only octet is served")
	ErrBusy            = errors.New("too many transfers in progress")
	ErrTimeout         = errors.New("client stopped acknowledging")
	ErrClientAbort     = errors.New("client sent an error")
	ErrMalformed       = errors.New("malformed or unexpected packet")
	ErrUnknownTID      = errors.New("packet from an unknown transfer ID")
	ErrIO              = errors.New("socket or file error")
	// ErrServerClosed is returned by Serve after Close.
	ErrServerClosed = errors.New("tftp: server closed")
)

var reasons = []struct {
	err error
	key string
}{
	{ErrFileNotFound, "not_found"},
	{ErrAccessViolation, "access_violation"},
	{ErrWriteRefused, "write_refused"},
	{ErrBadMode, "bad_mode"},
	{ErrBusy, "busy"},
	{ErrTimeout, "timeout"},
	{ErrClientAbort, "client_abort"},
	{ErrMalformed, "malformed"},
	{ErrUnknownTID, "unknown_tid"},
	{ErrIO, "io"},
	{ErrServerClosed, "shutdown"},
}

func reasonKey(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.key
		}
	}
	return "io"
}

// Stats is a snapshot of the server's counters, for the caller's Prometheus collector.
type Stats struct {
	Requests    uint64            // read and write requests received
	Completed   uint64            // transfers whose last block was acknowledged
	Failed      uint64            // requests refused or transfers abandoned
	BytesSent   uint64            // file bytes acknowledged by clients
	Retransmits uint64            // packets sent again after a timeout
	Active      int               // transfers in progress
	Errors      map[string]uint64 // by reason: not_found, access_violation, timeout, busy, ...
}

// Server is a read-only TFTP server (RFC 1350) with the option extension (RFC 2347):
// blksize (2348), tsize and timeout (2349) and windowsize (7440).
type Server struct {
	cfg     Config
	log     *slog.Logger
	quiet   *throttle.Log // per-request lines a client can cause, once per kind per period
	files   *fileStore
	slots   chan struct{}
	allowed map[string]bool            // Config.Files; nil: any name
	limit   *throttle.Window[[16]byte] // by source IP; nil: no limit

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	listeners map[net.PacketConn]struct{}
	stats     Stats
}

// New checks cfg, opens the boot directory and returns a server ready to Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Root == "" {
		return nil, errors.New("tftp: Config.Root is empty; set it to the boot file directory")
	}
	if cfg.MaxBlockSize == 0 {
		cfg.MaxBlockSize = DefaultMaxBlockSize
	}
	if cfg.MaxBlockSize < minBlockSize || cfg.MaxBlockSize > maxBlockSize {
		return nil, fmt.Errorf("tftp: MaxBlockSize %d outside %d..%d", cfg.MaxBlockSize, minBlockSize, maxBlockSize)
	}
	if cfg.MaxWindowSize == 0 {
		cfg.MaxWindowSize = DefaultMaxWindowSize
	}
	if cfg.MaxWindowSize < 1 || cfg.MaxWindowSize > maxWindowSize {
		return nil, fmt.Errorf("tftp: MaxWindowSize %d outside 1..%d", cfg.MaxWindowSize, maxWindowSize)
	}
	if cfg.MaxTransfers <= 0 {
		cfg.MaxTransfers = DefaultMaxTransfers
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Retries <= 0 {
		cfg.Retries = DefaultRetries
	}
	if cfg.CacheFileSize == 0 {
		cfg.CacheFileSize = DefaultCacheFileSize
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ListenTransfer == nil {
		cfg.ListenTransfer = listenUDPNear
	}
	files, err := newFileStore(cfg.Root, cfg.CacheFileSize, cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var allowed map[string]bool
	if cfg.Files != nil {
		allowed = map[string]bool{}
		for _, f := range cfg.Files {
			allowed[f] = true
		}
	}
	var limit *throttle.Window[[16]byte]
	if cfg.PerSource > 0 {
		limit = &throttle.Window[[16]byte]{Max: cfg.PerSource, Period: time.Second, MaxKeys: maxSources}
	}
	return &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		quiet:     &throttle.Log{Logger: cfg.Logger, Period: logPeriod},
		allowed:   allowed,
		limit:     limit,
		files:     files,
		slots:     make(chan struct{}, cfg.MaxTransfers),
		ctx:       ctx,
		cancel:    cancel,
		listeners: map[net.PacketConn]struct{}{},
		stats:     Stats{Errors: map[string]uint64{}},
	}, nil
}

// listenUDPNear opens a transfer socket on the listener's IP, so that replies leave from
// the address the client sent its request to.
func listenUDPNear(listener net.Addr) (net.PacketConn, error) {
	laddr := &net.UDPAddr{}
	if u, ok := listener.(*net.UDPAddr); ok {
		laddr.IP, laddr.Zone = u.IP, u.Zone
	}
	return net.ListenUDP("udp", laddr)
}

// Serve answers requests arriving on conn (usually UDP port 69 on the boot interface)
// until Close, then returns ErrServerClosed. Serve may run on several conns at once.
// Close closes conn.
func (s *Server) Serve(conn net.PacketConn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[conn] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, conn)
		s.mu.Unlock()
	}()

	buf := make([]byte, 65536) // any UDP datagram fits: nothing is truncated into a valid packet
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			return fmt.Errorf("tftp: read from %s: %w", conn.LocalAddr(), err)
		}
		s.handleDatagram(conn, buf[:n], from)
	}
}

// Close stops every Serve loop and transfer and waits for them to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.listeners {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return s.files.close()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.stats
	out.Errors = make(map[string]uint64, len(s.stats.Errors))
	for k, v := range s.stats.Errors {
		out.Errors[k] = v
	}
	return out
}

func (s *Server) count(f func(st *Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

func (s *Server) countError(err error) {
	s.count(func(st *Stats) { st.Errors[reasonKey(err)]++ })
}

// handleDatagram deals with one packet on the listening socket. Anything that is not a
// well-formed read request gets an ERROR (or silence) and the loop carries on.
func (s *Server) handleDatagram(conn net.PacketConn, b []byte, from net.Addr) {
	if u, ok := from.(*net.UDPAddr); ok && u.Port == 0 {
		s.countError(ErrMalformed) // nobody to answer
		return
	}
	if !s.allow(from) {
		s.count(func(st *Stats) { st.Errors[ReasonRateLimited]++ })
		if s.cfg.OnDrop != nil {
			s.cfg.OnDrop(ReasonRateLimited)
		}
		return
	}
	p, err := parsePacket(b)
	if err != nil {
		s.countError(ErrMalformed)
		s.log.Debug("tftp: bad packet", "client", from.String(), "len", len(b), "err", err)
		s.reply(conn, from, codeIllegalOperation, "malformed request")
		return
	}
	req, ok := p.(*request)
	if !ok {
		s.countError(ErrMalformed)
		s.log.Debug("tftp: unexpected packet on the request port", "client", from.String(), "opcode", p.op())
		if p.op() != opERROR { // never answer an error with an error: two peers could loop
			s.reply(conn, from, codeUnknownTID, "unknown transfer ID")
		}
		return
	}
	s.count(func(st *Stats) { st.Requests++ })
	switch {
	case req.write:
		s.refuse(conn, from, req, ErrWriteRefused, codeAccessViolation, "read-only server")
	case !strings.EqualFold(req.mode, "octet"):
		s.refuse(conn, from, req, ErrBadMode, codeIllegalOperation, "only octet mode is supported")
	default:
		s.startRead(conn, from, req)
	}
}

func (s *Server) reply(conn net.PacketConn, to net.Addr, code errorCode, msg string) {
	if _, err := conn.WriteTo(encodeError(code, msg), to); err != nil {
		s.log.Debug("tftp: send error packet", "client", to.String(), "err", err)
	}
}

func (s *Server) refuse(conn net.PacketConn, from net.Addr, req *request, reason error, code errorCode, msg string) {
	s.reply(conn, from, code, msg)
	s.finish(req.filename, from, 0, 0, reason)
}

// startRead runs a read request on its own goroutine and socket, if a slot is free.
func (s *Server) startRead(conn net.PacketConn, from net.Addr, req *request) {
	select {
	case s.slots <- struct{}{}:
	default:
		s.log.Debug("tftp: too many transfers, request dropped", "client", from.String(), "file", throttle.Quote(req.filename), "max", s.cfg.MaxTransfers)
		s.finish(req.filename, from, 0, 0, ErrBusy)
		return
	}
	// Add to the WaitGroup under the lock that Close takes first, so that Close never
	// waits while a new transfer is being added.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.slots
		return
	}
	s.stats.Active++
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		start := time.Now()
		acked, err := s.read(conn, from, req)
		s.count(func(st *Stats) { st.Active-- })
		<-s.slots
		s.finish(req.filename, from, acked, time.Since(start), err)
	}()
}

// finish records the end of a request: counters, log line and the caller's hook.
func (s *Server) finish(file string, from net.Addr, acked int64, dur time.Duration, err error) {
	s.count(func(st *Stats) {
		st.BytesSent += uint64(acked)
		if err == nil {
			st.Completed++
		} else {
			st.Failed++
			st.Errors[reasonKey(err)]++
		}
	})
	// The file name is the client's: always quoted. Only a sent file is logged every
	// time (few, and bounded by the transfer slots); failures are what a flood causes.
	switch {
	case err == nil:
		s.log.Info("tftp: sent", "file", throttle.Quote(file), "client", from.String(), "bytes", acked, "duration", dur)
	case errors.Is(err, ErrBusy), errors.Is(err, ErrClientAbort):
		// Floods of busy drops would drown the log (Stats counts them), and PXE firmware
		// routinely aborts after learning tsize.
		s.log.Debug("tftp: request ended", "file", throttle.Quote(file), "client", from.String(), "bytes", acked, "err", err)
	default:
		s.quiet.Info("tftp: request failed", "file", throttle.Quote(file), "client", from.String(), "bytes", acked, "err", err)
	}
	if s.cfg.OnTransfer != nil {
		s.cfg.OnTransfer(file, from.String(), acked, dur, err)
	}
}

// allow applies the per-source limit to one datagram on the request port.
func (s *Server) allow(from net.Addr) bool {
	if s.limit == nil {
		return true
	}
	var k [16]byte
	if u, ok := from.(*net.UDPAddr); ok {
		copy(k[:], u.IP.To16())
	}
	return s.limit.Allow(k)
}
