package image

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/agent/step"
)

// pipeline copies the decompressed image to the disk in three overlapping stages, each
// on its own goroutine and buffer: fill a block from the decoder, hash it, write it. The
// disk never waits for the hash and the decoder never waits for the disk, which is how
// Rivet keeps up with `curl | zstd -d | dd` while also verifying the digest.
//
// Writes are blockSize bytes (default 4 MiB) from page-aligned buffers at aligned
// offsets, so the disk can be open with O_DIRECT: no page-cache copy, and no gigabyte of
// dirty pages for the final fsync to wait on.
type pipeline struct {
	f         *os.File
	direct    bool  // f is open with O_DIRECT: lengths must be multiples of lbs
	lbs       int   // logical block size: O_DIRECT length granularity
	limit     int64 // the image may not extend past this offset (the disk's size)
	blockSize int
	buffers   int
	writers   int // writes in flight: a disk (even a loop device) is faster at queue depth > 1
	progress  func(done int64)
}

type chunk struct {
	buf []byte
	n   int
	off int64
}

// run copies src to the disk from offset 0 and returns the bytes written and their
// SHA-256. cancel must cancel ctx and whatever src reads from, so that a failing disk
// write also stops a network read in progress.
func (p *pipeline) run(ctx context.Context, cancel context.CancelFunc, src io.Reader) (int64, [32]byte, error) {
	free := make(chan []byte, p.buffers)
	for range p.buffers {
		free <- alignedBuffer(p.blockSize)
	}
	filled := make(chan chunk, p.buffers)
	hashed := make(chan chunk, p.buffers)
	var readErr error
	h := sha256.New()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(filled)
		readErr = p.read(ctx, src, free, filled)
		if readErr != nil {
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		defer close(hashed)
		for c := range filled {
			h.Write(c.buf[:c.n])
			select {
			case hashed <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	written, writeErr := p.writeAll(ctx, cancel, hashed, free)
	wg.Wait()
	var sum [32]byte
	switch {
	case writeErr != nil:
		return written, sum, writeErr
	case readErr != nil:
		return written, sum, readErr
	case ctx.Err() != nil:
		return written, sum, ctx.Err()
	}
	h.Sum(sum[:0])
	return written, sum, nil
}

// read fills free buffers from src and passes them on, in stream order.
func (p *pipeline) read(ctx context.Context, src io.Reader, free <-chan []byte, filled chan<- chunk) error {
	var off int64
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		n, err := fill(src, buf)
		if n > 0 {
			select {
			case filled <- chunk{buf: buf, n: n, off: off}:
			case <-ctx.Done():
				return ctx.Err()
			}
			off += int64(n)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the image stream at byte %d: %w", off, err)
		}
	}
}

// fill reads until buf is full or the stream ends. Unlike io.ReadFull it keeps a clean
// end (io.EOF) apart from a truncated stream (io.ErrUnexpectedEOF from the decoder).
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeAll runs the write stage: p.writers goroutines take hashed chunks and write
// each at its own offset, so several writes are in flight and the disk never idles
// between them. It returns the bytes written and the first error.
func (p *pipeline) writeAll(ctx context.Context, cancel context.CancelFunc, hashed <-chan chunk, free chan<- []byte) (int64, error) {
	var (
		mu       sync.Mutex
		written  int64
		firstErr error
		wg       sync.WaitGroup
	)
	for range max(p.writers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range hashed {
				mu.Lock()
				failed := firstErr != nil
				mu.Unlock()
				if !failed {
					err := p.write(c)
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = err
						cancel()
					} else if err == nil {
						written += int64(c.n)
						p.progress(written)
					}
					mu.Unlock()
				}
				free <- c.buf // never blocks: there are as many slots as buffers
			}
		}()
	}
	wg.Wait()
	return written, firstErr
}

// write puts one chunk on the disk. Only the last chunk may be shorter than a block and
// not a multiple of the logical block size, which O_DIRECT cannot write: it is padded
// with zeros to the next block boundary (still inside the disk, whose size is a multiple
// of the block size). The digest was taken before the padding.
func (p *pipeline) write(c chunk) error {
	if c.off+int64(c.n) > p.limit {
		return step.WithHint(step.Permanent(fmt.Errorf("image is larger than the disk (%d bytes): it does not fit", p.limit)),
			"choose a bigger install disk in the role, or a smaller image")
	}
	n := c.n
	if p.direct && n%p.lbs != 0 {
		padded := (n + p.lbs - 1) &^ (p.lbs - 1)
		clear(c.buf[n:padded])
		n = padded
	}
	return writeAll(p.f, c.buf[:n], c.off)
}

func writeAll(f *os.File, data []byte, off int64) error {
	if _, err := f.WriteAt(data, off); err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return step.Permanent(fmt.Errorf("writing at offset %d: %w", off, err))
		}
		return fmt.Errorf("writing the disk at offset %d: %w", off, err)
	}
	return nil
}

// alignedBuffer returns n bytes starting on a 4 KiB boundary, as O_DIRECT requires.
func alignedBuffer(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	skip := (align - int(uintptr(unsafe.Pointer(&b[0]))&(align-1))) & (align - 1)
	return b[skip : skip+n : skip+n]
}
