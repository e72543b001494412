package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/rivetmetal/rivet/agent/step/disk"
	"github.com/rivetmetal/rivet/agent/step/disk/disktest"
	"github.com/rivetmetal/rivet/agent/step/image"
	"github.com/rivetmetal/rivet/agent/step/image/imagetest"
	"github.com/rivetmetal/rivet/shared"
)

// ImageOptions configures the image-write bench. Zero values take the defaults.
type ImageOptions struct {
	SizeMB int    // raw image size in MiB; default 1024
	Rounds int    // rounds per side, alternating; the median is reported; default 3
	Dir    string // scratch directory for the image and the loop device's file; default $TMPDIR
	// Buffered makes the loop device write through the page cache of its backing file
	// (losetup's default). The default, direct I/O, makes a write complete when it is on
	// the backing disk, as it is on a real disk; buffered mostly measures memory copies.
	Buffered bool
	// Executor tuning, to compare settings; zero values are the executor's defaults.
	BlockSize          int
	Writers            int
	DecoderConcurrency int
	PageCache          bool // the executor writes without O_DIRECT
}

func (o *ImageOptions) imageDefaults() {
	orDefault(&o.SizeMB, 1024)
	orDefault(&o.Rounds, 3)
	orDefault(&o.Dir, os.TempDir())
}

// imageReference is the command the bench compares against: what an operator would type
// to put a compressed image on a disk by hand.
const imageReference = "curl -sk %s | zstd -d | dd of=%s bs=4M oflag=direct status=none"

// Image measures writing a zstd-compressed raw image, served over HTTPS on loopback the
// way a coordinator serves /v1/images/, onto a loop device: Rivet's image executor
// (stream, decompress, SHA-256 verify, write, fsync, marker) against
// `curl | zstd -d | dd oflag=direct` (which verifies nothing). Rounds alternate between
// the two; each side's median is reported, and both sides' results are checked against the
// image's digest after their last round. Needs root, losetup, curl and zstd.
func Image(ctx context.Context, w io.Writer, opts ImageOptions) error {
	opts.imageDefaults()
	if os.Geteuid() != 0 {
		return errors.New("image bench: needs root (loop devices)")
	}
	for _, tool := range []string{"losetup", "curl", "zstd", "dd", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("image bench: %s not found (bash .ci/install-debs installs it)", tool)
		}
	}
	dir, err := os.MkdirTemp(opts.Dir, "rvt-imagebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	size := int64(opts.SizeMB) << 20
	img, err := imagetest.Build(dir, "bench", size, 42)
	if err != nil {
		return err
	}
	if err := img.Zstd(filepath.Join(dir, "bench.raw.zst")); err != nil {
		return err
	}
	_ = os.Remove(img.Raw) // only the compressed form is served
	srv, err := imagetest.Serve(dir)
	if err != nil {
		return err
	}
	defer srv.Close()
	client, err := srv.Client()
	if err != nil {
		return err
	}
	loop, err := imageLoop(dir, size+64<<20, !opts.Buffered)
	if err != nil {
		return err
	}
	defer loop.Detach()
	serial := "RVT-BENCH-" + disktest.Suffix()
	sys := filepath.Join(dir, "sys")
	if err := disktest.FakeSysfs(sys, map[string]disktest.Identity{loop.Name: {Serial: serial}}); err != nil {
		return err
	}
	resolver := disk.Resolver{SysRoot: sys}
	target := shared.DiskTarget{Serial: serial}
	wipe := shared.Step{Name: "wipe", Kind: shared.StepDisk, Phase: shared.PhaseRAM, Disk: &shared.DiskStep{Target: target}}
	write := shared.Step{Name: "image", Kind: shared.StepImage, Phase: shared.PhaseRAM, Image: &shared.ImageStep{
		Target: target, Image: shared.ImageSpec{URL: shared.PathImages + "bench.raw.zst", SHA256: img.SHA256}}}
	exe := &image.Executor{Resolver: resolver, Source: client, BlockSize: opts.BlockSize, Writers: opts.Writers,
		DecoderConcurrency: opts.DecoderConcurrency, Buffered: opts.PageCache}
	wiper := &disk.Executor{Resolver: resolver}
	noProgress := func(shared.Progress) {}

	url := srv.URL + shared.PathImages + "bench.raw.zst"
	var rivet, reference []time.Duration
	for round := 0; round < opts.Rounds; round++ {
		// The wipe clears the marker, so each Rivet round writes the whole image.
		if _, err := wiper.Run(ctx, wipe, noProgress); err != nil {
			return fmt.Errorf("image bench: wipe: %w", err)
		}
		start := time.Now()
		status, err := exe.Run(ctx, write, noProgress)
		if err != nil || status != shared.StepSucceeded {
			return fmt.Errorf("image bench: rivet round %d: %v %w", round, status, err)
		}
		rivet = append(rivet, time.Since(start))
		if round == opts.Rounds-1 {
			if err := imageCheck(loop, img, "rivet"); err != nil {
				return err
			}
		}
		if _, err := wiper.Run(ctx, wipe, noProgress); err != nil {
			return fmt.Errorf("image bench: wipe: %w", err)
		}
		start = time.Now()
		cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", fmt.Sprintf(imageReference, url, loop.Dev))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("image bench: reference round %d: %v: %s", round, err, out)
		}
		reference = append(reference, time.Since(start))
		if round == opts.Rounds-1 {
			if err := imageCheck(loop, img, "reference"); err != nil {
				return err
			}
		}
	}
	r, ref := medianBy(rivet, time.Duration.Seconds), medianBy(reference, time.Duration.Seconds)
	mbps := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	loopMode := "direct-io"
	if opts.Buffered {
		loopMode = "buffered"
	}
	fmt.Fprintf(w, "image: %d MiB raw, %d MiB zstd, HTTPS on loopback, loop device %s, %d rounds; rivet %v, reference %v\n",
		opts.SizeMB, imageFileSize(filepath.Join(dir, "bench.raw.zst"))>>20, loopMode, opts.Rounds, rivet, reference)
	fmt.Fprintf(w, "rivet-figure: image size_mb=%d rivet_MBps=%.0f reference_MBps=%.0f ratio=%.2fx\n",
		opts.SizeMB, mbps(r), mbps(ref), ref.Seconds()/r.Seconds())
	return nil
}

// imageLoop attaches the bench's loop device, with direct I/O to its backing file unless
// buffered. The file is allocated up front so that writes overwrite rather than allocate.
func imageLoop(dir string, size int64, direct bool) (*disktest.Loop, error) {
	l, err := disktest.Attach(dir, size)
	if err != nil {
		return nil, err
	}
	if out, err := exec.Command("fallocate", "-l", fmt.Sprint(size), l.File).CombinedOutput(); err != nil {
		l.Detach()
		return nil, fmt.Errorf("fallocate %s: %v: %s", l.File, err, out)
	}
	if direct {
		if out, err := exec.Command("losetup", "--direct-io=on", l.Dev).CombinedOutput(); err != nil {
			l.Detach()
			return nil, fmt.Errorf("losetup --direct-io=on %s: %v: %s", l.Dev, err, out)
		}
	}
	return l, nil
}

// imageCheck makes sure a side really wrote the image (the loop's backing file holds the
// device's bytes).
func imageCheck(l *disktest.Loop, img *imagetest.Image, side string) error {
	got, err := disktest.SHA256(l.File, img.Size)
	if err != nil {
		return err
	}
	if got != img.SHA256 {
		return fmt.Errorf("image bench: after the %s run the disk hashes to %s, want %s", side, got, img.SHA256)
	}
	return nil
}

func imageFileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
