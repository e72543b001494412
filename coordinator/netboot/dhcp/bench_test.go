package dhcp

import (
	"testing"

	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
)

// BenchmarkRespond is the per-packet cost of a proxy offer, without sockets.
func BenchmarkRespond(b *testing.B) {
	s, err := New(Config{ServerIP: testServerIP, ScriptURL: scriptURL})
	if err != nil {
		b.Fatal(err)
	}
	pkt := dhcptest.Request{XID: 1, Arch: 0, PXE: true}.Bytes()
	b.ReportAllocs()
	for b.Loop() {
		if out, _ := s.respond(pkt, PortServer, nil); out == nil {
			b.Fatal("no reply")
		}
	}
}
