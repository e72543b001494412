package tftp

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

func TestParsePacket(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want packet
	}{
		{"\x00\x01boot.kpxe\x00octet\x00", &request{filename: "boot.kpxe", mode: "octet"}},
		{"\x00\x02up\x00octet\x00", &request{write: true, filename: "up", mode: "octet"}},
		{"\x00\x01f\x00octet\x00blksize\x001468\x00tsize\x000\x00",
			&request{filename: "f", mode: "octet", options: []option{{"blksize", "1468"}, {"tsize", "0"}}}},
		// NUL padding and a dangling option name, as some firmware sends, are ignored.
		{"\x00\x01f\x00octet\x00\x00\x00blksize\x00512\x00tsize", &request{filename: "f", mode: "octet",
			options: []option{{"blksize", "512"}}}},
		{"\x00\x03\x00\x07abc", &dataPacket{block: 7, payload: []byte("abc")}},
		{"\x00\x04\xff\xff", &ackPacket{block: 65535}},
		{"\x00\x05\x00\x01nope\x00", &errorPacket{code: 1, message: "nope"}},
		{"\x00\x05\x00\x02no terminator", &errorPacket{code: 2, message: "no terminator"}},
		{"\x00\x06windowsize\x0016\x00", &oackPacket{options: []option{{"windowsize", "16"}}}},
	} {
		got, err := parsePacket([]byte(tc.in))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parsePacket(%q) = %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "\x00", "\x00\x07", "\x00\x01f", "\x00\x01\x00octet\x00", "\x00\x01f\x00\x00",
		"\x00\x03\x00", "\x00\x04\x00", "\x00\x05\x00"} {
		if p, err := parsePacket([]byte(bad)); err == nil {
			t.Errorf("parsePacket(%q) = %#v, want an error", bad, p)
		}
	}
}

// FuzzParsePacket checks that the decoder never panics and that what it accepts survives
// an encode/decode round trip unchanged.
func FuzzParsePacket(f *testing.F) {
	for _, seed := range []string{
		"\x00\x01undionly.kpxe\x00octet\x00blksize\x001468\x00tsize\x000\x00windowsize\x0016\x00",
		"\x00\x02f\x00netascii\x00",
		"\x00\x03\x00\x01data",
		"\x00\x04\x00\x01",
		"\x00\x05\x00\x08refused\x00",
		"\x00\x06blksize\x001468\x00",
		"\x00\x01../../etc/passwd\x00octet\x00",
		"\x00\x63",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePacket(b)
		if err != nil {
			return
		}
		var again []byte
		switch p := p.(type) {
		case *request:
			again = encodeRequest(p)
		case *ackPacket:
			again = encodeAck(p.block)
		case *errorPacket:
			again = encodeError(p.code, p.message)
		case *oackPacket:
			again = encodeOACK(p.options)
		case *dataPacket:
			again = make([]byte, 4+len(p.payload))
			putDataHeader(again, p.block)
			copy(again[4:], p.payload)
		default:
			t.Fatalf("parsePacket returned %T", p)
		}
		q, err := parsePacket(again)
		if err != nil {
			t.Fatalf("re-encoded %#v does not parse: %v", p, err)
		}
		if !reflect.DeepEqual(normalize(p), normalize(q)) {
			t.Fatalf("round trip changed the packet: %#v became %#v", p, q)
		}
	})
}

// normalize makes an empty DATA payload compare equal whether nil or empty.
func normalize(p packet) packet {
	if d, ok := p.(*dataPacket); ok && len(d.payload) == 0 {
		return &dataPacket{block: d.block}
	}
	return p
}

// FuzzServerDatagram throws each input at a live server's request port and then checks
// that the server still serves a real fetch correctly. The server gives up on silent
// clients within milliseconds so that junk requests do not pile up; the real fetch asks
// for a 1 s timeout (RFC 2349) so that a busy fuzzing machine does not fail it.
func FuzzServerDatagram(f *testing.F) {
	for _, seed := range []string{
		"\x00\x01f\x00octet\x00",
		"\x00\x01f\x00octet\x00blksize\x008\x00windowsize\x0065535\x00tsize\x00x\x00timeout\x00255\x00",
		"\x00\x01f\x00OcTeT\x00blksize\x00999999\x00",
		"\x00\x01f/../f\x00octet\x00",
		"\x00\x02f\x00octet\x00",
		"\x00\x04\x00\x00",
		"\x00\x05\x00\x00\x00",
		"\x00\x01\x00",
	} {
		f.Add([]byte(seed))
	}
	ts := startServer(f, Config{Timeout: 5 * time.Millisecond, Retries: 1, MaxTransfers: 10000})
	want := ts.writeFile(f, "f", 3000)
	// One sender for all inputs: its port is never reused by a later Fetch, which could
	// otherwise receive the last words (an ERROR) of a transfer an earlier input started.
	junk := newRawClient(f, ts.addr)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := junk.conn.WriteToUDP(b, junk.server); err != nil {
			t.Fatal(err)
		}
		got, err := Fetch(testContext(t), ts.addr, "f", FetchOptions{
			BlockSize: 1024, WindowSize: 2, ServerTimeout: time.Second, Retries: 20, Timeout: 200 * time.Millisecond,
		})
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("after datagram %q the server no longer serves: %v", b, err)
		}
	})
}
