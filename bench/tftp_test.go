package bench

import (
	"bytes"
	"context"
	"flag"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

var tftpFull = flag.Bool("tftp.full", false, "run the TFTP bench at full size (200 clients, 5 rounds, undionly.kpxe and ipxe.efi) and log the figures")

func TestTFTPBenchPrintsFigure(t *testing.T) {
	testenv.RequireCommand(t, "in.tftpd")
	testenv.RequireFile(t, "/usr/lib/ipxe/undionly.kpxe")
	// Both sides really moved the file (sizes come from the file, times from the runs).
	benchFigure(t, 5*time.Minute, func(ctx context.Context, out *bytes.Buffer) error {
		return TFTP(ctx, out, TFTPOptions{Clients: 20, Rounds: 1})
	}, `^rivet-figure: boot tftp clients=20 file=undionly\.kpxe bytes=(\d+) blksize=1468 `+
		`rivet_window=16 tftpd_hpa_window=\d+ rivet_s=([\d.]+) tftpd_hpa_s=([\d.]+) .* ratio=([\d.]+)x\n$`)

	if !*tftpFull {
		return
	}
	testenv.RequireFile(t, "/usr/lib/ipxe/ipxe.efi")
	for _, file := range []string{"/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/ipxe.efi"} {
		benchFigure(t, 5*time.Minute, func(ctx context.Context, out *bytes.Buffer) error {
			return TFTP(ctx, out, TFTPOptions{File: file})
		}, `^rivet-figure: boot tftp clients=\d+ file=\S+ bytes=(\d+) .* rivet_s=([\d.]+) tftpd_hpa_s=([\d.]+) .* ratio=([\d.]+)x\n$`)
	}
}
