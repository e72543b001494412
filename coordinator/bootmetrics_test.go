package coordinator

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rivetmetal/rivet/coordinator/netboot"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp"
	"github.com/rivetmetal/rivet/coordinator/netboot/tftp"
)

// seriesCount is how many series reg holds.
func seriesCount(t testing.TB, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	n := 0
	for _, mf := range mfs {
		n += len(mf.GetMetric())
	}
	return n
}

// maxBootSeries bounds what wireNetboot can create whatever clients send: TFTP 7 file
// classes x 2 results; boot requests 2 services x 7 classes x 6 archs; DHCP 6 archs x
// 3 outcomes; drops 3 x 3; tickets 5; one byte counter.
const maxBootSeries = 14 + 84 + 18 + 9 + 5 + 1

// TestBootMetricLabelsAreFixedClasses: a TFTP file name that is not UTF-8 used to become
// a label value and panic the whole coordinator; 15,000 distinct names used to become
// 15,000 series. Now both land in the "other" class.
func TestBootMetricLabelsAreFixedClasses(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := &metrics{reg: reg}
	nb := &netboot.Config{}
	m.wireNetboot(nb)
	nb.TFTPTransfer("\xff", "10.0.0.9:1000", 0, 0, tftp.ErrFileNotFound)
	nb.TFTPTransfer("\x01\xff\xfe", "10.0.0.9:1000", 0, 0, tftp.ErrFileNotFound)
	for i := range 15000 {
		nb.TFTPTransfer(fmt.Sprintf("attacker-%d", i), "10.0.0.9:1000", 0, 0, tftp.ErrFileNotFound)
	}
	nb.TFTPTransfer("undionly.kpxe", "10.0.0.9:1000", 70000, 0, nil)
	nb.DHCPEvent(dhcp.Event{Kind: dhcp.EventReply, Arch: dhcp.ArchBIOS})
	nb.DHCPEvent(dhcp.Event{Kind: dhcp.EventMalformed, Arch: dhcp.Arch(99)})
	nb.Dropped("tftp", "something new")
	nb.TicketEvent("made up")
	if n := seriesCount(t, reg); n > 12 {
		t.Fatalf("%d series after 15,002 distinct TFTP names; want at most 12", n)
	}
	for _, want := range []string{`file="other",result="error"} 15002`, `file="ipxe-bios",result="ok"} 1`,
		`rivet_boot_dropped_total{reason="other",service="tftp"} 1`} {
		if body := exposition(t, reg); !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
}
