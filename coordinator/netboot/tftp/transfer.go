package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot/throttle"
)

// errNoAck means the retransmission timer ran out; the caller decides whether to retry.
var errNoAck = errors.New("no acknowledgement before the deadline")

// maxBackoffShift caps the exponential backoff at 8 times the base timeout.
const maxBackoffShift = 3

// read serves one read request: open the file, answer from a fresh socket, send it.
// It returns the bytes the client acknowledged.
func (s *Server) read(listener net.PacketConn, client net.Addr, req *request) (int64, error) {
	conn, err := s.cfg.ListenTransfer(listener.LocalAddr())
	if err != nil {
		s.reply(listener, client, codeNotDefined, "server error, retry later")
		return 0, fmt.Errorf("%w: open transfer socket: %v", ErrIO, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(s.ctx, func() { conn.Close() }) // Close ends every transfer
	defer stop()

	src, err := s.open(req.filename)
	if err != nil {
		// Like tftp-hpa, even a refusal comes from the new transfer ID.
		code, msg := codeFileNotFound, "file not found"
		if errors.Is(err, ErrAccessViolation) {
			code, msg = codeAccessViolation, "access violation"
		}
		s.reply(conn, client, code, msg)
		return 0, err
	}
	defer src.close()

	t := &sender{s: s, conn: conn, peer: client, src: src, blksize: 512, window: 1, rto: s.cfg.Timeout}
	t.negotiate(req.options)
	s.log.Debug("tftp: transfer start", "file", throttle.Quote(req.filename), "client", client.String(),
		"size", src.size, "blksize", t.blksize, "windowsize", t.window, "timeout", t.rto)
	t.lastBlock = src.size/int64(t.blksize) + 1 // the last block is short, possibly empty
	t.packet = make([]byte, 4+t.blksize)
	t.rbuf = make([]byte, 1024)
	return t.run()
}

// open opens a file the server may serve: one of Config.Files, if set.
func (s *Server) open(name string) (content, error) {
	if s.allowed != nil && !s.allowed[name] {
		return content{}, fmt.Errorf("%w: %s is not one of the files served over TFTP", ErrFileNotFound, throttle.Quote(name))
	}
	return s.files.open(name)
}

// sender is the state of one outgoing transfer. Blocks are numbered from 1 as int64;
// the wire carries the low 16 bits, so files of more than 65535 blocks roll over to 0
// (what iPXE, tftp-hpa and most firmware expect).
type sender struct {
	s         *Server
	conn      net.PacketConn
	peer      net.Addr
	src       content
	blksize   int
	window    int
	rto       time.Duration
	oack      []option // nil: no option was accepted, start with DATA 1
	lastBlock int64
	packet    []byte
	rbuf      []byte
}

// negotiate accepts the options Rivet understands (RFC 2347: unknown ones are ignored,
// invalid values are left out of the OACK, which means "not accepted").
func (t *sender) negotiate(opts []option) {
	seen := map[string]bool{}
	for _, o := range opts {
		name := strings.ToLower(o.name)
		if seen[name] {
			continue
		}
		seen[name] = true
		v, ok := parseDecimal(o.value, 6)
		n := int(v)
		switch {
		case name == optBlockSize && ok && n >= minBlockSize:
			t.blksize = min(n, t.s.cfg.MaxBlockSize)
			t.oack = append(t.oack, option{optBlockSize, strconv.Itoa(t.blksize)})
		case name == optWindowSize && ok && n >= 1:
			t.window = min(n, t.s.cfg.MaxWindowSize)
			t.oack = append(t.oack, option{optWindowSize, strconv.Itoa(t.window)})
		case name == optTimeout && ok && n >= 1 && n <= 255:
			t.rto = time.Duration(n) * time.Second // RFC 2349: accept the exact value or nothing
			t.oack = append(t.oack, option{optTimeout, strconv.Itoa(n)})
		case name == optTransferSz:
			t.oack = append(t.oack, option{optTransferSz, strconv.FormatInt(t.src.size, 10)})
		}
	}
}

// parseDecimal accepts only plain ASCII digits (no sign, no spaces), at most maxDigits
// (at most 18, so the result never overflows).
func parseDecimal(s string, maxDigits int) (int64, bool) {
	if len(s) == 0 || len(s) > min(maxDigits, 18) {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

func (t *sender) run() (int64, error) {
	if t.oack != nil {
		oack := encodeOACK(t.oack)
		if _, err := t.exchange(func() error { return t.send(oack) }, 0, 0); err != nil {
			return 0, err
		}
	}
	// RFC 7440: send a window, wait for an ACK; an ACK for any block of the window moves
	// the window to the block after it (the client acknowledges the last block it got in
	// order, so a gap is resent at once). ACKs that move nothing are ignored: answering
	// them is the Sorcerer's Apprentice bug, and the timer covers real losses.
	base := int64(1)
	for base <= t.lastBlock {
		end := min(base+int64(t.window)-1, t.lastBlock)
		k, err := t.exchange(func() error { return t.sendBlocks(base, end) }, base, end)
		if err != nil {
			return t.bytesUpTo(base - 1), err
		}
		base = k + 1
	}
	return t.src.size, nil
}

func (t *sender) bytesUpTo(block int64) int64 { return min(block*int64(t.blksize), t.src.size) }

// exchange sends with send and waits for an ACK of a block in [lo, hi], resending with
// backoff until the retry limit.
func (t *sender) exchange(send func() error, lo, hi int64) (int64, error) {
	for attempt := 0; ; attempt++ {
		if err := send(); err != nil {
			return 0, err
		}
		deadline := time.Now().Add(t.rto << min(attempt, maxBackoffShift))
		k, err := t.awaitAck(lo, hi, deadline)
		if !errors.Is(err, errNoAck) {
			return k, err
		}
		if attempt >= t.s.cfg.Retries {
			t.send(encodeError(codeNotDefined, "timeout: no acknowledgement"))
			return 0, fmt.Errorf("%w: no ACK for block %d after %d retries", ErrTimeout, lo, t.s.cfg.Retries)
		}
		t.s.count(func(st *Stats) { st.Retransmits++ })
	}
}

func (t *sender) sendBlocks(first, last int64) error {
	for i := first; i <= last; i++ {
		off := (i - 1) * int64(t.blksize)
		n := int(min(int64(t.blksize), t.src.size-off))
		putDataHeader(t.packet, uint16(i))
		if n > 0 {
			if _, err := t.src.ReadAt(t.packet[4:4+n], off); err != nil && !errors.Is(err, io.EOF) {
				t.send(encodeError(codeNotDefined, "read error"))
				return fmt.Errorf("%w: read block %d: %v", ErrIO, i, err)
			}
		}
		if err := t.send(t.packet[:4+n]); err != nil {
			return err
		}
	}
	return nil
}

// send writes one datagram to the client. A failed send is not fatal (the timer resends)
// unless the socket is gone because the server is closing.
func (t *sender) send(b []byte) error {
	if _, err := t.conn.WriteTo(b, t.peer); err != nil {
		if errors.Is(err, net.ErrClosed) {
			return t.socketError(err)
		}
		t.s.log.Debug("tftp: send", "client", t.peer.String(), "err", err)
	}
	return nil
}

// awaitAck reads until an ACK for a block in [lo, hi] arrives (returning that block),
// the client sends an ERROR, or the deadline passes (errNoAck).
func (t *sender) awaitAck(lo, hi int64, deadline time.Time) (int64, error) {
	if err := t.conn.SetReadDeadline(deadline); err != nil {
		return 0, t.socketError(err)
	}
	for {
		n, from, err := t.conn.ReadFrom(t.rbuf)
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				return 0, errNoAck
			}
			return 0, t.socketError(err)
		}
		if !sameAddr(from, t.peer) {
			// RFC 1350: tell the stranger, keep the transfer going.
			t.s.countError(ErrUnknownTID)
			t.conn.WriteTo(encodeError(codeUnknownTID, "unknown transfer ID"), from)
			continue
		}
		p, err := parsePacket(t.rbuf[:n])
		switch p := p.(type) {
		case *ackPacket:
			// Map the 16-bit number onto [lo, hi]; anything else is an old duplicate.
			if diff := int64(p.block - uint16(lo)); diff <= hi-lo {
				return lo + diff, nil
			}
		case *errorPacket:
			return 0, fmt.Errorf("%w: code %d %s", ErrClientAbort, p.code, throttle.Quote(p.message))
		default:
			t.s.log.Debug("tftp: ignored packet during transfer", "client", t.peer.String(), "err", err)
		}
	}
}

// socketError classifies a failed socket call: the server closing it, or a real error.
func (t *sender) socketError(err error) error {
	if t.s.ctx.Err() != nil {
		return ErrServerClosed
	}
	return fmt.Errorf("%w: %v", ErrIO, err)
}

func sameAddr(a, b net.Addr) bool {
	ua, ok1 := a.(*net.UDPAddr)
	ub, ok2 := b.(*net.UDPAddr)
	if ok1 && ok2 {
		return ua.Port == ub.Port && ua.IP.Equal(ub.IP)
	}
	return a.String() == b.String()
}
