package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// rawClient speaks TFTP packet by packet, so a test can drop, repeat or forge packets.
type rawClient struct {
	t      testing.TB
	conn   *net.UDPConn
	server *net.UDPAddr // the request port
	peer   *net.UDPAddr // the transfer's port, learnt from the first answer
}

func newRawClient(t testing.TB, addr string) *rawClient {
	t.Helper()
	server, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, server: server}
}

// send writes to the transfer port once known, else to the request port.
func (c *rawClient) send(b []byte) {
	c.t.Helper()
	to := c.server
	if c.peer != nil {
		to = c.peer
	}
	if _, err := c.conn.WriteToUDP(b, to); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next packet; the test fails if none comes within 10 s.
func (c *rawClient) recv() packet {
	c.t.Helper()
	p, from := c.recvFrom(10 * time.Second)
	if p == nil {
		c.t.Fatal("no packet from the server within 10s")
	}
	if c.peer == nil && from.Port != c.server.Port {
		c.peer = from
	}
	return p
}

// recvFrom returns the next packet and its source, or nil after wait.
func (c *rawClient) recvFrom(wait time.Duration) (packet, *net.UDPAddr) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 70000)
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil
		}
		c.t.Fatal(err)
	}
	p, err := parsePacket(buf[:n])
	if err != nil {
		c.t.Fatalf("server sent a malformed packet: %v", err)
	}
	return p, from
}

func (c *rawClient) expectError(code errorCode) *errorPacket {
	c.t.Helper()
	p := c.recv()
	e, ok := p.(*errorPacket)
	if !ok || e.code != code {
		c.t.Fatalf("got %s, want ERROR %d", describe(p), code)
	}
	return e
}

func (c *rawClient) expectData(block uint16) *dataPacket {
	c.t.Helper()
	p := c.recv()
	d, ok := p.(*dataPacket)
	if !ok || d.block != block {
		c.t.Fatalf("got %s, want DATA %d", describe(p), block)
	}
	return d
}

// describe names a packet briefly for a failure message.
func describe(p packet) string {
	switch p := p.(type) {
	case *dataPacket:
		return fmt.Sprintf("DATA %d (%d bytes)", p.block, len(p.payload))
	case *errorPacket:
		return fmt.Sprintf("ERROR %d %q", p.code, p.message)
	default:
		return fmt.Sprintf("%T %+v", p, p)
	}
}

func rrq(name string, opts ...option) []byte {
	return encodeRequest(&request{filename: name, mode: "octet", options: opts})
}

func TestWriteRequestRefused(t *testing.T) {
	ts := startServer(t, Config{})
	c := newRawClient(t, ts.addr)
	c.send(encodeRequest(&request{write: true, filename: "new.bin", mode: "octet"}))
	c.expectError(codeAccessViolation)
	testenv.Eventually(t, 10*time.Second, "write refusal counted", testenv.Holds(func() bool { return ts.Stats().Errors["write_refused"] == 1 }, nil))
}

func TestOnlyOctetMode(t *testing.T) {
	ts := startServer(t, Config{})
	ts.writeFile(t, "f", 10)
	for _, mode := range []string{"netascii", "mail", "binary"} {
		c := newRawClient(t, ts.addr)
		c.send(encodeRequest(&request{filename: "f", mode: mode}))
		c.expectError(codeIllegalOperation)
	}
	// Mode names are case-insensitive (RFC 1350).
	c := newRawClient(t, ts.addr)
	c.send(encodeRequest(&request{filename: "f", mode: "OCTET"}))
	c.expectData(1)
	c.send(encodeAck(1))
}

func TestRetransmitsWhenAcksAreLost(t *testing.T) {
	ts := startServer(t, Config{Timeout: 20 * time.Millisecond, Retries: 8})
	want := ts.writeFile(t, "f", 512*3+100)
	c := newRawClient(t, ts.addr)
	c.send(rrq("f"))
	var got []byte
	seen := map[uint16]int{}
	for expected := uint16(1); expected <= 4; {
		d, ok := c.recv().(*dataPacket)
		if !ok {
			t.Fatal("want DATA")
		}
		if d.block < expected {
			continue // a late extra copy of a block already acknowledged
		}
		if d.block != expected {
			t.Fatalf("got DATA %d, want %d", d.block, expected)
		}
		// Drop the first copy of every block: only a retransmission gets its ACK.
		if seen[d.block]++; seen[d.block] == 1 {
			continue
		}
		got = append(got, d.payload...)
		c.send(encodeAck(d.block))
		expected++
	}
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	testenv.Eventually(t, 10*time.Second, "transfer completion", testenv.Holds(func() bool { return ts.Stats().Completed == 1 }, nil))
	if st := ts.Stats(); st.Retransmits < 4 {
		t.Errorf("%d retransmits counted, want at least 4", st.Retransmits)
	}
}

func TestLostWindowResentFromGap(t *testing.T) {
	// The timer is far away, so anything resent within the test came from the gap ACK.
	ts := startServer(t, Config{Timeout: 30 * time.Second})
	ts.writeFile(t, "f", 512*20)
	c := newRawClient(t, ts.addr)
	c.send(rrq("f", option{"windowsize", "8"}))
	if _, ok := c.recv().(*oackPacket); !ok {
		t.Fatal("want OACK")
	}
	c.send(encodeAck(0))
	for b := uint16(1); b <= 8; b++ {
		c.expectData(b)
	}
	c.send(encodeAck(3)) // "block 4 never arrived"
	for b := uint16(4); b <= 11; b++ {
		c.expectData(b)
	}
	c.send(encodeError(codeNotDefined, "done"))
}

func TestDuplicateAcksDoNotDoubleTraffic(t *testing.T) {
	// Sorcerer's Apprentice: a duplicate ACK must not make the server send the next
	// block twice. Any duplicate would show up as an out-of-order block below.
	ts := startServer(t, Config{Timeout: 30 * time.Second})
	want := ts.writeFile(t, "f", 512*5+1)
	c := newRawClient(t, ts.addr)
	c.send(rrq("f"))
	var got []byte
	for block := uint16(1); block <= 6; block++ {
		got = append(got, c.expectData(block).payload...)
		c.send(encodeAck(block))
		c.send(encodeAck(block))
		if block > 1 {
			c.send(encodeAck(block - 1)) // an old one as well
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	testenv.Eventually(t, 10*time.Second, "transfer completion", testenv.Holds(func() bool { return ts.Stats().Completed == 1 }, nil))
}

func TestGivesUpAndFreesSlot(t *testing.T) {
	ts := startServer(t, Config{Timeout: 10 * time.Millisecond, Retries: 2, MaxTransfers: 1})
	want := ts.writeFile(t, "f", 2000)
	c := newRawClient(t, ts.addr)
	c.send(rrq("f"))
	for range 3 { // the first send and two retries
		c.expectData(1)
	}
	c.expectError(codeNotDefined) // "timeout", then the server forgets us
	testenv.Eventually(t, 10*time.Second, "the slot to be freed", testenv.Holds(func() bool {
		st := ts.Stats()
		return st.Active == 0 && st.Errors["timeout"] == 1
	}, nil))
	got, err := Fetch(testContext(t), ts.addr, "f", FetchOptions{})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetch after give-up: %v", err)
	}
}

func TestBusyServerDropsRequests(t *testing.T) {
	ts := startServer(t, Config{Timeout: 30 * time.Second, MaxTransfers: 1})
	want := ts.writeFile(t, "f", 2000)
	holder := newRawClient(t, ts.addr)
	holder.send(rrq("f"))
	holder.expectData(1) // holds the only slot

	_, err := Fetch(testContext(t), ts.addr, "f", FetchOptions{Timeout: 50 * time.Millisecond, Retries: 1})
	if err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Fatalf("fetch while busy: %v, want no answer", err)
	}
	if n := ts.Stats().Errors["busy"]; n < 1 {
		t.Fatalf("busy count %d, want >= 1", n)
	}
	holder.send(encodeError(codeNotDefined, "changed my mind"))
	testenv.Eventually(t, 10*time.Second, "the slot to be freed", testenv.Holds(func() bool { return ts.Stats().Active == 0 }, nil))
	got, err := Fetch(testContext(t), ts.addr, "f", FetchOptions{})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetch after the holder left: %v", err)
	}
	if n := ts.Stats().Errors["client_abort"]; n != 1 {
		t.Errorf("client_abort count %d, want 1", n)
	}
}

func TestTsizeProbeThenAbort(t *testing.T) {
	// PXE firmware often asks for tsize only, then aborts with ERROR 8 and asks again.
	ts := startServer(t, Config{})
	ts.writeFile(t, "undionly.kpxe", 74213)
	c := newRawClient(t, ts.addr)
	c.send(rrq("undionly.kpxe", option{"tsize", "0"}))
	o, ok := c.recv().(*oackPacket)
	if !ok {
		t.Fatal("want OACK")
	}
	if v, _ := findOption(o.options, "tsize"); v != "74213" {
		t.Fatalf("tsize %q, want 74213", v)
	}
	c.send(encodeError(codeOptionRefused, "probe only"))
	testenv.Eventually(t, 10*time.Second, "abort counted", testenv.Holds(func() bool { st := ts.Stats(); return st.Active == 0 && st.Errors["client_abort"] == 1 }, nil))
}

func TestUnknownTransferIDIsTurnedAway(t *testing.T) {
	ts := startServer(t, Config{Timeout: 30 * time.Second})
	want := ts.writeFile(t, "f", 700)
	c := newRawClient(t, ts.addr)
	c.send(rrq("f"))
	first := c.expectData(1)

	stranger := newRawClient(t, ts.addr)
	stranger.peer = c.peer
	stranger.send(encodeAck(1))
	stranger.expectError(codeUnknownTID)

	// The real client's transfer carries on.
	c.send(encodeAck(1))
	second := c.expectData(2)
	c.send(encodeAck(2))
	if !bytes.Equal(append(first.payload, second.payload...), want) {
		t.Fatal("content differs")
	}
	testenv.Eventually(t, 10*time.Second, "completion", testenv.Holds(func() bool { return ts.Stats().Completed == 1 }, nil))
}

func TestMalformedPacketsKeepServerAlive(t *testing.T) {
	ts := startServer(t, Config{})
	want := ts.writeFile(t, "f", 3000)
	huge := make([]byte, 65000)
	binary.BigEndian.PutUint16(huge, uint16(opRRQ))
	tooManyOptions := rrq("f")
	for range maxOptions + 1 {
		tooManyOptions = append(tooManyOptions, "x\x00y\x00"...)
	}
	cases := []struct {
		name   string
		packet []byte
		answer int // error code expected, or -1 for silence
	}{
		{"empty", nil, int(codeIllegalOperation)},
		{"one byte", []byte{0}, int(codeIllegalOperation)},
		{"unknown opcode", []byte{0, 99, 'x', 0}, int(codeIllegalOperation)},
		{"opcode zero", []byte{0, 0}, int(codeIllegalOperation)},
		{"request without terminator", []byte("\x00\x01undionly.kpxe"), int(codeIllegalOperation)},
		{"request without mode", []byte("\x00\x01f\x00"), int(codeIllegalOperation)},
		{"empty filename", []byte("\x00\x01\x00octet\x00"), int(codeIllegalOperation)},
		{"too many options", tooManyOptions, int(codeIllegalOperation)},
		{"huge datagram", huge, int(codeIllegalOperation)},
		{"data on request port", []byte{0, 3, 0, 1, 'x'}, int(codeUnknownTID)},
		{"ack on request port", []byte{0, 4, 0, 1}, int(codeUnknownTID)},
		{"oack on request port", []byte("\x00\x06blksize\x00512\x00"), int(codeUnknownTID)},
		{"error on request port", []byte("\x00\x05\x00\x01boom\x00"), -1},
		{"truncated ack", []byte{0, 4, 0}, int(codeIllegalOperation)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newRawClient(t, ts.addr)
			c.send(tc.packet)
			if tc.answer >= 0 {
				c.expectError(errorCode(tc.answer))
			}
		})
	}
	// Silence is asserted indirectly: a fetch right after gets its own answer only.
	got, err := Fetch(testContext(t), ts.addr, "f", FetchOptions{BlockSize: 1468})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetch after bad packets: %v", err)
	}
	if n := ts.Stats().Errors["malformed"]; n != uint64(len(cases)) {
		t.Errorf("malformed count %d, want %d", n, len(cases))
	}
}

func TestCloseEndsTransfersInProgress(t *testing.T) {
	ts := startServer(t, Config{Timeout: time.Minute})
	ts.writeFile(t, "f", 5000)
	c := newRawClient(t, ts.addr)
	c.send(rrq("f"))
	c.expectData(1)
	done := make(chan struct{})
	go func() { ts.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a stalled transfer")
	}
	if st := ts.Stats(); st.Active != 0 || st.Errors["shutdown"] != 1 {
		t.Fatalf("after Close: %+v", st)
	}
}
