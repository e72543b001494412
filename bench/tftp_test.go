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

var tftpFull = flag.Bool("tftp.full", false, "run the TFTP bench at full size (200 clients, 5 rounds, undionly.kpxe and ipxe.efi) and log the figures")

func TestTFTPBenchPrintsFigure(t *testing.T) {
	testenv.RequireCommand(t, "in.tftpd")
	testenv.RequireFile(t, "/usr/lib/ipxe/undionly.kpxe")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := TFTP(ctx, &out, TFTPOptions{Clients: 20, Rounds: 1}); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^rivet-figure: boot tftp clients=20 file=undionly\.kpxe bytes=(\d+) blksize=1468 ` +
		`rivet_window=16 tftpd_hpa_window=\d+ rivet_s=([\d.]+) tftpd_hpa_s=([\d.]+) .* ratio=([\d.]+)x\n$`)
	m := line.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output %q does not match %s", out.String(), line)
	}
	// Both sides really moved the file (sizes come from the file, times from the runs).
	for _, f := range m[1:] {
		if v, err := strconv.ParseFloat(f, 64); err != nil || v <= 0 {
			t.Errorf("figure %q in %q is not a positive number", f, out.String())
		}
	}

	if !*tftpFull {
		return
	}
	testenv.RequireFile(t, "/usr/lib/ipxe/ipxe.efi")
	for _, file := range []string{"/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/ipxe.efi"} {
		out.Reset()
		if err := TFTP(ctx, &out, TFTPOptions{File: file}); err != nil {
			t.Fatal(err)
		}
		t.Log(out.String())
	}
}
