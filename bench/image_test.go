package bench

import (
	"bytes"
	"context"
	"flag"
	"strconv"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

var (
	imageFull      = flag.Bool("image.full", false, "run the image bench at full size (1024 MiB, 3 rounds) and log the figure")
	imageBuffered  = flag.Bool("image.buffered", false, "image bench: buffered loop device instead of direct I/O")
	imagePageCache = flag.Bool("image.pagecache", false, "image bench: the executor writes without O_DIRECT")
	imageBlock     = flag.Int("image.block", 0, "image bench: executor write size in bytes (0: default)")
	imageWriters   = flag.Int("image.writers", 0, "image bench: executor writes in flight (0: default)")
	imageDecoders  = flag.Int("image.decoders", 0, "image bench: zstd decoder concurrency (0: default)")
)

func TestImageBenchPrintsFigure(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tool := range []string{"losetup", "curl", "zstd", "fallocate"} {
		testenv.RequireCommand(t, tool)
	}
	opts := ImageOptions{SizeMB: 64, Rounds: 1, Dir: t.TempDir(), Buffered: *imageBuffered, PageCache: *imagePageCache,
		BlockSize: *imageBlock, Writers: *imageWriters, DecoderConcurrency: *imageDecoders}
	if *imageFull {
		opts.SizeMB, opts.Rounds = 1024, 3
	}
	benchFigure(t, 10*time.Minute, func(ctx context.Context, out *bytes.Buffer) error { return Image(ctx, out, opts) },
		`(?m)^rivet-figure: image size_mb=`+strconv.Itoa(opts.SizeMB)+` rivet_MBps=(\d+) reference_MBps=(\d+) ratio=([\d.]+)x$`)
}
