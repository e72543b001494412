package image

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

var (
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic = []byte{0x1f, 0x8b}
)

// detect returns the compression of a stream that starts with head, honouring the
// declared one: "auto" (or empty) trusts the magic bytes; an explicit zstd or gzip must
// match them, so a role that names the wrong file fails with a clear message instead of
// a decoder error; "none" writes the bytes as they come.
func detect(declared string, head []byte) (string, error) {
	var seen string
	switch {
	case bytes.HasPrefix(head, zstdMagic):
		seen = shared.CompressionZstd
	case bytes.HasPrefix(head, gzipMagic):
		seen = shared.CompressionGzip
	default:
		seen = shared.CompressionNone
	}
	switch declared {
	case "", shared.CompressionAuto:
		return seen, nil
	case shared.CompressionNone:
		return shared.CompressionNone, nil
	case seen:
		return seen, nil
	}
	return "", step.WithHint(step.Permanent(fmt.Errorf("image is declared %s but its first bytes % x look like %s",
		declared, head[:min(4, len(head))], seen)), `fix the role's image.compression (or set it to "auto")`)
}

// decompressor wraps the stream in the decoder for kind. The zstd decoder runs
// concurrency block decoders ahead of the writer (0: GOMAXPROCS).
func decompressor(kind string, r io.Reader, concurrency int) (io.Reader, func(), error) {
	switch kind {
	case shared.CompressionZstd:
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(concurrency), zstd.WithDecoderLowmem(false))
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	case shared.CompressionGzip:
		g, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, step.Permanent(fmt.Errorf("image is not valid gzip: %w", err))
		}
		return g, func() { g.Close() }, nil
	}
	return r, func() {}, nil
}

// sizeHint returns the uncompressed size when the stream says it up front: the frame
// content size of a zstd frame (the zstd tool records it for files), or the length of an
// uncompressed body. 0 means unknown; it only feeds the progress percentage.
func sizeHint(kind string, br *bufio.Reader, contentLength int64) int64 {
	switch kind {
	case shared.CompressionZstd:
		head, _ := br.Peek(zstd.HeaderMaxSize)
		var h zstd.Header
		if h.Decode(head) == nil && h.HasFCS {
			return int64(h.FrameContentSize)
		}
	case shared.CompressionNone:
		return max(contentLength, 0)
	}
	return 0
}
