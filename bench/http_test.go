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

var httpFull = flag.Bool("http.full", false, "run the HTTP boot bench at full size (200 clients, 8+20 MB, 3 rounds) and log the figure")

func TestHTTPBenchPrintsFigure(t *testing.T) {
	testenv.RequireCommand(t, "nginx")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	opts := HTTPOptions{Clients: 10, Rounds: 1, KernelSize: 1 << 20, InitrdSize: 3 << 20}
	if *httpFull {
		opts = HTTPOptions{}
	}
	var out bytes.Buffer
	if err := HTTP(ctx, &out, opts); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^rivet-figure: boot http clients=\d+ kernel_bytes=\d+ initrd_bytes=\d+ ` +
		`rivet_MBps=(\d+) nginx_MBps=(\d+) ratio=([\d.]+)x\n$`)
	m := line.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output %q does not match %s", out.String(), line)
	}
	// Both servers delivered every byte (checked inside) in a positive time.
	for _, f := range m[1:] {
		if v, err := strconv.ParseFloat(f, 64); err != nil || v <= 0 {
			t.Errorf("figure %q in %q is not a positive number", f, out.String())
		}
	}
	t.Log(out.String())
}
