package bench

import (
	"bytes"
	"context"
	"flag"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

var dhcpFull = flag.Bool("dhcp.full", false, "run the proxyDHCP bench at full size (20000 requests, 3 rounds) and log the figure")

func TestDHCPBenchPrintsFigure(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	testenv.RequireCommand(t, "dnsmasq")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := DHCPOptions{Requests: 2000, Rounds: 1}
	if *dhcpFull {
		opts = DHCPOptions{}
	}
	var out bytes.Buffer
	if err := DHCP(ctx, &out, opts); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^rivet-figure: boot proxydhcp requests=\d+ window=64 rivet_rps=(\d+) dnsmasq_rps=(\d+) ` +
		`rivet_lost=(\d+) dnsmasq_lost=(\d+) ratio=([\d.]+)x\n$`)
	m := line.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output %q does not match %s", out.String(), line)
	}
	// Both servers really answered (a rate of 0 would mean no OFFER came back).
	for _, f := range []string{m[1], m[2], m[5]} {
		if v, err := strconv.ParseFloat(f, 64); err != nil || v <= 0 {
			t.Errorf("figure %q in %q is not a positive number", f, out.String())
		}
	}
	t.Log(out.String())
}
