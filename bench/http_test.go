package bench

import (
	"bytes"
	"context"
	"flag"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

var httpFull = flag.Bool("http.full", false, "run the HTTP boot bench at full size (200 clients, 8+20 MB, 3 rounds) and log the figure")

func TestHTTPBenchPrintsFigure(t *testing.T) {
	testenv.RequireCommand(t, "nginx")
	opts := HTTPOptions{Clients: 10, Rounds: 1, KernelSize: 1 << 20, InitrdSize: 3 << 20}
	if *httpFull {
		opts = HTTPOptions{}
	}
	// Both servers delivered every byte (checked inside) in a positive time.
	benchFigure(t, 10*time.Minute, func(ctx context.Context, out *bytes.Buffer) error { return HTTP(ctx, out, opts) },
		`^rivet-figure: boot http clients=\d+ kernel_bytes=\d+ initrd_bytes=\d+ `+
			`rivet_MBps=(\d+) nginx_MBps=(\d+) ratio=([\d.]+)x\n$`)
}
