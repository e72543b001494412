// Package image writes an OS image onto the disk a plan names: it streams the image over
// HTTPS from the coordinators, detects zstd or gzip by magic bytes, decompresses, hashes
// and writes in overlapping stages with large aligned (O_DIRECT) writes, verifies the
// SHA-256 of the uncompressed stream, and leaves a marker near the end of the disk so that
// a rerun of the step finds the work done and skips it.
//
// Interrupted writes are redone from the start: the marker is invalidated (and flushed)
// before the first byte is written and set only after the verified image is on stable
// storage, so a half-written disk is never mistaken for a finished one. Within one
// attempt, a dropped connection is resumed with an HTTP Range request; across attempts
// (agent restart, power loss) the download starts over. Resuming a compressed stream in
// the middle would need the decoder's state, which is why Rivet does not try.
package image

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/disk"
	"github.com/rivetmetal/rivet/shared"
)

// Executor runs image steps.
type Executor struct {
	Resolver   disk.Resolver
	Source     Opener       // the coordinators (a *shared.Client); for image URLs that are paths
	HTTPClient *http.Client // for absolute image URLs (mirrors); default: Go's default transport
	Logger     *slog.Logger

	// Tuning; the defaults were measured (see bench/image.go).
	BlockSize          int  // bytes per write, rounded up to 4 KiB; default 4 MiB
	Buffers            int  // blocks in flight between the stages; default 6
	Writers            int  // writes in flight (queue depth); default 2
	Buffered           bool // write through the page cache instead of O_DIRECT
	DecoderConcurrency int  // zstd block decoders; default 0 = GOMAXPROCS
}

// hintDigest is the operator hint for a digest mismatch.
const hintDigest = "the image the coordinator serves is not the one the role names: compare " +
	"`sha256sum` of the uncompressed image with the role's image.sha256, fix one of them, then retry"

// Run writes the image, or skips when the disk's marker says it holds it already.
func (e *Executor) Run(ctx context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error) {
	if s.Image == nil {
		return "", step.Permanent(fmt.Errorf("step %s has no image payload", s.Name))
	}
	spec := s.Image.Image
	log := step.LoggerOr(e.Logger)
	d, err := e.Resolver.ResolveUnused(s.Image.Target)
	if err != nil {
		return "", err
	}
	direct := !e.Buffered
	f, err := disk.OpenExclusive(d, directFlag(direct))
	if err != nil && direct && errors.Is(err, unix.EINVAL) {
		direct = false // a device without O_DIRECT support
		f, err = disk.OpenExclusive(d, 0)
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	log = log.With("disk", d.Name, "url", spec.URL)

	block := alignedBuffer(markerSize)
	if m, err := readMarker(f, d.Size, block); err == nil && m.matches(spec.SHA256) {
		log.Info("disk already holds the image; skipping", "size", m.Size, "written_at", m.WrittenAt)
		progress(shared.Progress{Done: m.Size, Total: m.Size})
		return shared.StepSkipped, nil
	}
	if err := invalidateMarker(f, d.Size, block); err != nil {
		return "", err
	}

	started := time.Now()
	n, sum, err := e.copyImage(ctx, f, d, direct, spec, progress)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", err
	}
	if got := hex.EncodeToString(sum[:]); got != spec.SHA256 {
		// Make the bad image unbootable too; the marker is invalid already.
		zeroHead(f, block)
		return "", step.WithHint(step.Permanent(fmt.Errorf("image %s: sha256 of the %d uncompressed bytes is %s, the role says %s",
			spec.URL, n, got, spec.SHA256)), hintDigest)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("flushing %s: %w", d.Path, err)
	}
	took := time.Since(started)
	log.Info("image written and verified", "bytes", n, "took", took.Round(time.Millisecond),
		"MBps", fmt.Sprintf("%.0f", float64(n)/took.Seconds()/1e6))
	if err := writeMarker(f, d.Size, n, sum, block); err != nil {
		log.Warn("image marker not written; a rerun writes the image again", "err", err)
	}
	if err := disk.RereadPartitions(f); err != nil && !errors.Is(err, unix.EINVAL) {
		log.Warn("kernel did not re-read the image's partition table; a reboot will", "err", err)
	}
	return shared.StepSucceeded, nil
}

// copyImage streams, decompresses, hashes and writes the image.
func (e *Executor) copyImage(ctx context.Context, f *os.File, d *disk.Device, direct bool, spec shared.ImageSpec, progress func(shared.Progress)) (int64, [32]byte, error) {
	var none [32]byte
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	body, resp, err := newResumingBody(sctx, e.opener(spec.URL))
	if err != nil {
		return 0, none, describeOpenError(spec.URL, err)
	}
	defer body.Close()
	br := bufio.NewReaderSize(body, 1<<20)
	head, err := br.Peek(4)
	if err != nil && len(head) == 0 {
		return 0, none, fmt.Errorf("image %s: reading the first bytes: %w", spec.URL, err)
	}
	kind, err := detect(spec.Compression, head)
	if err != nil {
		return 0, none, err
	}
	total := sizeHint(kind, br, resp.ContentLength)
	src, closeDecoder, err := decompressor(kind, br, e.DecoderConcurrency)
	if err != nil {
		return 0, none, err
	}
	defer closeDecoder()
	p := &pipeline{f: f, direct: direct, lbs: d.LogicalBlockSize, limit: d.Size,
		blockSize: (orInt(e.BlockSize, 4<<20) + 4095) &^ 4095, buffers: orInt(e.Buffers, 6), writers: orInt(e.Writers, 2),
		progress: func(done int64) {
			t := total
			if done > t {
				t = 0 // the hint was one frame of several: unknown after all
			}
			progress(shared.Progress{Done: done, Total: t})
		}}
	return p.run(sctx, cancel, src)
}

func directFlag(on bool) int {
	if on {
		return unix.O_DIRECT
	}
	return 0
}

func orInt(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}
