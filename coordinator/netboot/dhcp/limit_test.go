package dhcp

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// TestPerSourceLimitDropsAFloodFromOneClient sends 50 DISCOVERs of one MAC from one
// socket to a server that allows 10 per second: 10 are handled, 40 dropped and counted,
// and another MAC from the same socket is still served.
func TestPerSourceLimitDropsAFloodFromOneClient(t *testing.T) {
	now := time.Unix(1e9, 0) // one window for the whole test
	var dropped int
	events := make(chan Event, 200)
	s := newTestServer(t, Config{PerSource: 10, Now: func() time.Time { return now },
		OnEvent: func(e Event) { events <- e }})
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, conn, nil) }()
	t.Cleanup(func() { cancel(); <-served })

	client, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	send := func(mac int, xid uint32) {
		pkt := dhcptest.Request{XID: xid, MAC: dhcptest.MAC(mac), Arch: 0, PXE: true}.Bytes()
		if _, err := client.WriteTo(pkt, conn.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		send(1, uint32(i))
	}
	send(2, 99)
	testenv.Eventually(t, 10*time.Second, "51 datagrams handled or dropped", testenv.Holds(func() bool {
		st := s.Stats()
		return st.Total()+st.Dropped == 51
	}, nil))
	st := s.Stats()
	if st.Dropped != 40 || st.Total() != 11 {
		t.Fatalf("stats %+v: want 40 dropped, 11 handled (10 of MAC 1, 1 of MAC 2)", st)
	}
	for len(events) > 0 {
		if e := <-events; e.Kind == EventDropped {
			if e.Reason != ReasonRateLimited {
				t.Fatalf("dropped event with reason %q", e.Reason)
			}
			dropped++
		}
	}
	if dropped != 40 {
		t.Fatalf("%d dropped events, want 40", dropped)
	}
}

// TestPoolExhaustedIsLoggedOncePerPeriod: a flood of DISCOVERs from new MACs against a
// full pool writes one warning, not one per packet.
func TestPoolExhaustedIsLoggedOncePerPeriod(t *testing.T) {
	var buf bytes.Buffer
	s := newTestServer(t, Config{Mode: ModeFull, Pool: fullPool, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	for i := range 1000 {
		ask(t, s, dhcptest.Request{XID: uint32(i), MAC: dhcptest.MAC(i), Arch: -1}, PortServer, nil)
	}
	if n := strings.Count(buf.String(), "address pool exhausted"); n != 1 {
		t.Fatalf("%d pool-exhausted warnings for 997 refused DISCOVERs, want 1:\n%.2000s", n, buf.String())
	}
}
