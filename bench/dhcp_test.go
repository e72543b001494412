package bench

import (
	"bytes"
	"context"
	"flag"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

var dhcpFull = flag.Bool("dhcp.full", false, "run the proxyDHCP bench at full size (20000 requests, 3 rounds) and log the figure")

func TestDHCPBenchPrintsFigure(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	testenv.RequireCommand(t, "dnsmasq")
	opts := DHCPOptions{Requests: 2000, Rounds: 1}
	if *dhcpFull {
		opts = DHCPOptions{}
	}
	// Both servers really answered (a rate of 0 would mean no OFFER came back).
	benchFigure(t, 5*time.Minute, func(ctx context.Context, out *bytes.Buffer) error { return DHCP(ctx, out, opts) },
		`^rivet-figure: boot proxydhcp requests=\d+ window=64 rivet_rps=(\d+) dnsmasq_rps=(\d+) `+
			`rivet_lost=(\d+) dnsmasq_lost=(\d+) ratio=([\d.]+)x\n$`, 1, 2, 5)
}
