package dhcptest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"
)

// Request describes one client request to build.
type Request struct {
	Type        dhcpv4.MessageType // default DISCOVER
	MAC         net.HardwareAddr   // default MAC(1)
	XID         uint32
	Arch        int    // option 93; -1 leaves it out
	PXE         bool   // option 60 "PXEClient:Arch:xxxxx:UNDI:002001"
	HTTP        bool   // option 60 "HTTPClient:Arch:xxxxx:UNDI:003000": UEFI HTTP boot
	IPXE        bool   // user class "iPXE", as iPXE sends it
	ClientIP    net.IP // ciaddr
	RequestedIP net.IP // option 50
	ServerID    net.IP // option 54
}

// Bytes encodes r as a PXE ROM or iPXE would.
func (r Request) Bytes() []byte {
	if r.MAC == nil {
		r.MAC = MAC(1)
	}
	typ := r.Type
	if typ == dhcpv4.MessageTypeNone {
		typ = dhcpv4.MessageTypeDiscover
	}
	p := &dhcpv4.DHCPv4{
		OpCode: dhcpv4.OpcodeBootRequest, HWType: iana.HWTypeEthernet,
		ClientHWAddr: r.MAC, Flags: 0x8000, // broadcast, as PXE ROMs ask
		ClientIPAddr: net.IPv4zero, YourIPAddr: net.IPv4zero, ServerIPAddr: net.IPv4zero,
		GatewayIPAddr: net.IPv4zero, Options: dhcpv4.Options{},
	}
	binary.BigEndian.PutUint32(p.TransactionID[:], r.XID)
	if r.ClientIP != nil {
		p.ClientIPAddr = r.ClientIP
	}
	p.UpdateOption(dhcpv4.OptMessageType(typ))
	p.UpdateOption(dhcpv4.OptParameterRequestList(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter,
		dhcpv4.OptionDomainNameServer, dhcpv4.OptionVendorSpecificInformation, dhcpv4.OptionClassIdentifier))
	if r.Arch >= 0 {
		p.Options[dhcpv4.OptionClientSystemArchitectureType.Code()] = []byte{byte(r.Arch >> 8), byte(r.Arch)}
		p.Options[dhcpv4.OptionClientNetworkInterfaceIdentifier.Code()] = []byte{1, 2, 1}
		guid := make([]byte, 17)
		copy(guid[11:], r.MAC)
		p.Options[dhcpv4.OptionClientMachineIdentifier.Code()] = guid
	}
	if r.PXE {
		p.UpdateOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:002001", max(r.Arch, 0))))
	}
	if r.HTTP {
		p.UpdateOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("HTTPClient:Arch:%05d:UNDI:003000", max(r.Arch, 0))))
	}
	if r.IPXE {
		p.Options[dhcpv4.OptionUserClassInformation.Code()] = []byte("iPXE")
	}
	if r.RequestedIP != nil {
		p.UpdateOption(dhcpv4.OptRequestedIPAddress(r.RequestedIP))
	}
	if r.ServerID != nil {
		p.UpdateOption(dhcpv4.OptServerIdentifier(r.ServerID))
	}
	return p.ToBytes()
}

// MAC returns a locally administered MAC numbered i.
func MAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, byte(i >> 16), byte(i >> 8), byte(i)}
}

// Client is a DHCP client socket on port 68, bound to one interface. Open it inside the
// client namespace (with Do).
type Client struct {
	conn *net.UDPConn
	mu   sync.Mutex
	seen map[uint32][]reply // replies read while waiting for another xid
}

type reply struct {
	pkt  *dhcpv4.DHCPv4
	from *net.UDPAddr
}

// Broadcast is where a client without an address sends: 255.255.255.255:67.
var Broadcast = &net.UDPAddr{IP: net.IPv4bcast, Port: 67}

// NewClient opens ip:port on iface (ip nil: the wildcard address, which also receives
// broadcasts; a client bound to its unicast address receives only unicast replies).
// SO_REUSEADDR lets both kinds share port 68 in one namespace.
func NewClient(iface string, ip net.IP, port int) (*Client, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}
			if serr == nil {
				serr = unix.BindToDevice(int(fd), iface)
			}
			if serr == nil { // room for a burst of replies during a benchmark
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	if ip == nil {
		ip = net.IPv4zero
	}
	pc, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort(ip.String(), fmt.Sprint(port)))
	if err != nil {
		return nil, err
	}
	return &Client{conn: pc.(*net.UDPConn), seen: map[uint32][]reply{}}, nil
}

// Close closes the socket.
func (c *Client) Close() error { return c.conn.Close() }

// Send writes one datagram.
func (c *Client) Send(pkt []byte, to *net.UDPAddr) error {
	_, err := c.conn.WriteTo(pkt, to)
	return err
}

// Receive waits up to timeout for a reply with transaction id xid. Replies for other
// ids are kept for later calls.
func (c *Client) Receive(xid uint32, timeout time.Duration) (*dhcpv4.DHCPv4, *net.UDPAddr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rs := c.seen[xid]; len(rs) > 0 {
		c.seen[xid] = rs[1:]
		return rs[0].pkt, rs[0].from, nil
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 2048)
	for {
		if err := c.conn.SetReadDeadline(deadline); err != nil {
			return nil, nil, err
		}
		n, from, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			return nil, nil, fmt.Errorf("no reply for xid %#x within %v: %w", xid, timeout, err)
		}
		p, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || p.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		got := binary.BigEndian.Uint32(p.TransactionID[:])
		if got == xid {
			return p, from, nil
		}
		c.seen[got] = append(c.seen[got], reply{p, from})
	}
}

// Pending reports whether a reply for xid has been read and not yet taken by Receive.
func (c *Client) Pending(xid uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen[xid]) > 0
}

// LoadResult is the outcome of Flood.
type LoadResult struct {
	Sent, Replies int
	Elapsed       time.Duration // first send to last reply
}

// PerSecond is the reply rate.
func (r LoadResult) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Replies) / r.Elapsed.Seconds()
}

// Flood sends pkts (whose transaction ids must be firstXID, firstXID+1, ...) to `to`,
// keeping at most window requests unanswered, and counts distinct replies. A request
// unanswered for lossWait counts as lost, so a dropping server slows the flood instead
// of stalling it. The client must not be used by anyone else meanwhile.
func (c *Client) Flood(ctx context.Context, pkts [][]byte, firstXID uint32, to *net.UDPAddr, window int, lossWait time.Duration) (LoadResult, error) {
	n := len(pkts)
	got := make([]atomic.Bool, n)
	var replies atomic.Int64
	var last atomic.Int64 // unix nanos of the latest reply
	progress := make(chan struct{}, window)
	var stop atomic.Bool
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 2048)
		for {
			m, _, err := c.conn.ReadFromUDP(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && !stop.Load() {
					continue
				}
				return
			}
			if m < 8 || buf[0] != byte(dhcpv4.OpcodeBootReply) {
				continue
			}
			i := int(binary.BigEndian.Uint32(buf[4:8]) - firstXID)
			if i < 0 || i >= n || got[i].Swap(true) {
				continue
			}
			replies.Add(1)
			last.Store(time.Now().UnixNano())
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	}()
	if err := c.conn.SetReadDeadline(time.Time{}); err != nil {
		return LoadResult{}, err
	}

	start := time.Now()
	lost := 0
	sent := 0
	for sent < n {
		if ctx.Err() != nil {
			break
		}
		inflight := sent - int(replies.Load()) - lost
		if inflight < window {
			if _, err := c.conn.WriteTo(pkts[sent], to); err != nil {
				return LoadResult{}, fmt.Errorf("send request %d: %w", sent, err)
			}
			sent++
			continue
		}
		select {
		case <-progress:
		case <-time.After(lossWait):
			lost += inflight // give up on everything outstanding
		}
	}
	// Wait for the tail: until every request is answered or lossWait passes quietly.
	for int(replies.Load()) < sent {
		before := replies.Load()
		select {
		case <-progress:
			continue
		case <-time.After(lossWait):
		}
		if replies.Load() == before {
			break
		}
	}
	res := LoadResult{Sent: sent, Replies: int(replies.Load())}
	if l := last.Load(); l > 0 {
		res.Elapsed = time.Unix(0, l).Sub(start)
	}
	// Stop the reader: the flag makes the timeout from a deadline in the past final.
	stop.Store(true)
	if err := c.conn.SetReadDeadline(time.Now()); err != nil {
		return res, err
	}
	<-readerDone
	return res, c.conn.SetReadDeadline(time.Time{})
}
