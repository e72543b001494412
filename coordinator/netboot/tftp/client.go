package tftp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// FetchOptions are the options a client asks for. Zero values ask for nothing, which
// gives the plain RFC 1350 transfer: 512-byte blocks, one block per ACK.
type FetchOptions struct {
	BlockSize  int  // blksize option (RFC 2348), 8..65464
	WindowSize int  // windowsize option (RFC 7440), 1..65535
	TSize      bool // ask for the transfer size (RFC 2349) and check it
	// ServerTimeout asks the server to wait this long before resending (the RFC 2349
	// timeout option, whole seconds 1..255, rounded up).
	ServerTimeout time.Duration
	Timeout       time.Duration // wait before resending; default 1s
	Retries       int           // resends before giving up; default 5
}

// FetchResult is a finished download and what was negotiated for it.
type FetchResult struct {
	Data       []byte
	BlockSize  int
	WindowSize int
	TSize      int64 // -1 when the server did not report it
	Resent     int   // ACKs (or the request) sent again after a timeout
}

// RemoteError is an ERROR packet from the server.
type RemoteError struct {
	Code    uint16
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("tftp server error %d: %s", e.Code, e.Message)
}

// Fetch downloads file from the TFTP server at addr ("host:port") in octet mode.
func Fetch(ctx context.Context, addr, file string, opts FetchOptions) ([]byte, error) {
	r, err := FetchWithResult(ctx, addr, file, opts)
	if err != nil {
		return nil, err
	}
	return r.Data, nil
}

// FetchWithResult is Fetch that also reports the negotiated options.
func FetchWithResult(ctx context.Context, addr, file string, opts FetchOptions) (*FetchResult, error) {
	server, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("tftp fetch: resolve %q: %w", addr, err)
	}
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("tftp fetch: open socket: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	c := &receiver{conn: conn, server: server, opts: opts, blksize: 512, window: 1,
		result: &FetchResult{TSize: -1}}
	if c.opts.Timeout <= 0 {
		c.opts.Timeout = DefaultTimeout
	}
	if c.opts.Retries <= 0 {
		c.opts.Retries = DefaultRetries
	}
	err = c.run(ctx, file)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("tftp fetch %s from %s: %w", file, addr, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("tftp fetch %s from %s: %w", file, addr, err)
	}
	c.result.BlockSize, c.result.WindowSize = c.blksize, c.window
	return c.result, nil
}

// receiver is the state of one download.
type receiver struct {
	conn    *net.UDPConn
	server  *net.UDPAddr // where the request goes
	peer    *net.UDPAddr // the server's transfer ID, once it has answered
	opts    FetchOptions
	blksize int
	window  int
	last    []byte // the last packet sent, resent on timeout
	result  *FetchResult

	next     uint16 // block number expected next
	inWindow int    // blocks received in order since the last ACK
	gapAcked bool   // an ACK for a gap was sent and nothing in order came since
}

func (c *receiver) run(ctx context.Context, file string) error {
	req := &request{filename: file, mode: "octet"}
	if c.opts.BlockSize > 0 {
		req.options = append(req.options, option{optBlockSize, strconv.Itoa(c.opts.BlockSize)})
	}
	if c.opts.WindowSize > 0 {
		req.options = append(req.options, option{optWindowSize, strconv.Itoa(c.opts.WindowSize)})
	}
	if c.opts.TSize {
		req.options = append(req.options, option{optTransferSz, "0"})
	}
	if c.opts.ServerTimeout > 0 {
		secs := min(255, (c.opts.ServerTimeout+time.Second-1)/time.Second)
		req.options = append(req.options, option{optTimeout, strconv.Itoa(int(secs))})
	}
	c.next = 1
	if err := c.send(encodeRequest(req)); err != nil {
		return err
	}
	buf := make([]byte, 4+maxBlockSize)
	retries := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.conn.SetReadDeadline(time.Now().Add(c.opts.Timeout)); err != nil {
			return err
		}
		n, from, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if ctx.Err() != nil || !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			if retries++; retries > c.opts.Retries {
				return fmt.Errorf("no answer after %d retries", c.opts.Retries)
			}
			c.result.Resent++
			if err := c.send(c.last); err != nil {
				return err
			}
			continue
		}
		p, err := parsePacket(buf[:n])
		if err != nil || !c.fromServer(from, p) {
			continue // noise; the timer recovers
		}
		done, err := c.handle(req, p)
		if err != nil || done {
			return err
		}
		retries = 0
	}
}

// fromServer latches onto the first port the server answers from and tells any other
// port of that host that it is an unknown transfer (a second answer to a resent request).
// Only a packet that can open a transfer is latched onto: a stray DATA for a later block
// is the tail of some older transfer that used our port before us.
func (c *receiver) fromServer(from *net.UDPAddr, p packet) bool {
	if !from.IP.Equal(c.server.IP) {
		return false
	}
	if c.peer == nil {
		if d, ok := p.(*dataPacket); ok && d.block != 1 {
			return false
		}
		if _, ok := p.(*ackPacket); ok {
			return false
		}
		c.peer = from
		return true
	}
	if from.Port != c.peer.Port {
		c.conn.WriteToUDP(encodeError(codeUnknownTID, "unknown transfer ID"), from)
		return false
	}
	return true
}

func (c *receiver) handle(req *request, p packet) (done bool, err error) {
	switch p := p.(type) {
	case *oackPacket:
		if c.next != 1 || len(c.result.Data) > 0 {
			return false, nil // a duplicate OACK after data started
		}
		if err := c.accept(req, p.options); err != nil {
			c.send(encodeError(codeOptionRefused, err.Error()))
			return false, err
		}
		return false, c.send(encodeAck(0))
	case *dataPacket:
		return c.receive(p)
	case *errorPacket:
		return false, &RemoteError{Code: uint16(p.code), Message: p.message}
	}
	return false, nil
}

// accept checks an OACK against what was asked (RFC 2347: a server may lower a value,
// never raise it, and may not add options the client did not send).
func (c *receiver) accept(req *request, opts []option) error {
	for _, o := range opts {
		asked, ok := findOption(req.options, o.name)
		if !ok {
			return fmt.Errorf("server acknowledged option %q that was not requested", o.name)
		}
		n, ok := parseDecimal(o.value, 18)
		if !ok {
			return fmt.Errorf("option %s has bad value %q", o.name, o.value)
		}
		want, _ := parseDecimal(asked, 6)
		switch {
		case strings.EqualFold(o.name, optBlockSize) && n >= minBlockSize && n <= want:
			c.blksize = int(n)
		case strings.EqualFold(o.name, optWindowSize) && n >= 1 && n <= want:
			c.window = int(n)
		case strings.EqualFold(o.name, optTimeout) && n == want:
		case strings.EqualFold(o.name, optTransferSz):
			c.result.TSize = n
			c.result.Data = make([]byte, 0, min(n, 64<<20)) // a hint, not a promise
		default:
			return fmt.Errorf("option %s=%s not acceptable (asked %s)", o.name, o.value, asked)
		}
	}
	return nil
}

// receive takes one DATA packet. In-order blocks are kept and acknowledged at the end of
// each window; anything else triggers one ACK of the last in-order block (RFC 7440), which
// tells the server where to resume.
func (c *receiver) receive(p *dataPacket) (bool, error) {
	if p.block != c.next {
		if !c.gapAcked {
			c.gapAcked, c.inWindow = true, 0
			return false, c.send(encodeAck(c.next - 1))
		}
		return false, nil
	}
	if len(p.payload) > c.blksize {
		return false, fmt.Errorf("block %d has %d bytes, more than the block size %d", p.block, len(p.payload), c.blksize)
	}
	c.result.Data = append(c.result.Data, p.payload...)
	c.next++
	c.inWindow++
	c.gapAcked = false
	if len(p.payload) < c.blksize {
		if err := c.send(encodeAck(p.block)); err != nil {
			return false, err
		}
		if c.result.TSize >= 0 && int64(len(c.result.Data)) != c.result.TSize {
			return false, fmt.Errorf("received %d bytes, server announced tsize %d", len(c.result.Data), c.result.TSize)
		}
		return true, nil
	}
	if c.inWindow == c.window {
		c.inWindow = 0
		return false, c.send(encodeAck(p.block))
	}
	return false, nil
}

func (c *receiver) send(b []byte) error {
	c.last = b
	to := c.server
	if c.peer != nil {
		to = c.peer
	}
	_, err := c.conn.WriteToUDP(b, to)
	return err
}
