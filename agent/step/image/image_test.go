package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/disk"
	"github.com/rivetmetal/rivet/agent/step/image/imagetest"
	"github.com/rivetmetal/rivet/shared"
)

func TestDetect(t *testing.T) {
	zst, gz, raw := []byte{0x28, 0xb5, 0x2f, 0xfd}, []byte{0x1f, 0x8b, 8, 0}, []byte{0xeb, 0x63, 0x90, 0}
	for _, tc := range []struct {
		declared string
		head     []byte
		want     string
		fails    bool
	}{
		{"", zst, "zstd", false},
		{"auto", gz, "gzip", false},
		{"auto", raw, "none", false},
		{"zstd", zst, "zstd", false},
		{"gzip", gz, "gzip", false},
		{"none", zst, "none", false}, // the operator says so: write the bytes as they are
		{"zstd", gz, "", true},
		{"gzip", raw, "", true},
		{"auto", []byte{0x28}, "none", false}, // too short to be zstd
	} {
		got, err := detect(tc.declared, tc.head)
		if tc.fails != (err != nil) || got != tc.want {
			t.Errorf("detect(%q, % x) = %q, %v; want %q (fails %v)", tc.declared, tc.head, got, err, tc.want, tc.fails)
		}
		if err != nil && (!step.IsPermanent(err) || step.HintOf(err) == "") {
			t.Errorf("detect(%q): mismatch must be permanent with a hint: %v", tc.declared, err)
		}
	}
}

func TestMarkerRoundTripAndDamage(t *testing.T) {
	size := int64(64 << 20)
	d := make(memDisk, size)
	m := marker{SHA256: sha256.Sum256([]byte("x")), Size: 12345, WrittenAt: time.Unix(1700000000, 0).UTC()}
	block := alignedBuffer(markerSize)
	m.encode(block)
	copy(d[markerOffset(size):], block)
	got, err := readMarker(d, size, alignedBuffer(markerSize))
	if err != nil || got != m {
		t.Fatalf("read back %+v, %v; want %+v", got, err, m)
	}
	if !got.matches("2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881") {
		t.Fatal("marker does not match its own digest")
	}
	if off := markerOffset(size); off%markerSize != 0 || off > size-markerFromEnd || off < size-disk.EndWipe {
		t.Fatalf("marker at %d is not aligned, or outside the disk step's tail wipe", off)
	}
	d[markerOffset(size)+50] ^= 1 // one flipped bit in the size field
	if _, err := readMarker(d, size, alignedBuffer(markerSize)); !errors.Is(err, errNoMarker) {
		t.Fatalf("a damaged marker was accepted: %v", err)
	}
	if _, err := readMarker(d, 1<<20, alignedBuffer(markerSize)); !errors.Is(err, errNoMarker) {
		t.Fatal("a disk too small for a marker claimed one")
	}
}

type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, io.EOF
	}
	return copy(p, m[off:]), nil
}

// TestPipelineWritesAndHashes runs the three stages against a file opened with O_DIRECT,
// with a length that is not a multiple of the block or sector size.
func TestPipelineWritesAndHashes(t *testing.T) {
	data := make([]byte, 9<<20+777)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.UintN(7))
	}
	path := filepath.Join(t.TempDir(), "disk")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o600)
	direct := err == nil
	if !direct { // a filesystem without O_DIRECT (tmpfs): the buffered path still runs
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &pipeline{f: f, direct: direct, lbs: 512, limit: 1 << 30, blockSize: 1 << 20, buffers: 4, writers: 3,
		progress: func(done int64) { last = done }}
	n, sum, err := p.run(ctx, cancel, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) || sum != sha256.Sum256(data) || last != n {
		t.Fatalf("wrote %d (progress %d), digest %x; want %d, %x", n, last, sum, len(data), sha256.Sum256(data))
	}
	got, err := os.ReadFile(path)
	if err != nil || len(got) < len(data) || !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("file content differs from the stream (%v)", err)
	}
	// O_DIRECT pads the unaligned tail with zeros up to the next sector, no further.
	if pad := got[len(data):]; len(pad) >= 512 || !bytes.Equal(pad, make([]byte, len(pad))) {
		t.Fatalf("%d bytes after the image, want fewer than 512 zeros", len(pad))
	}

	// An image bigger than the disk stops with a permanent error.
	p = &pipeline{f: f, lbs: 512, limit: 4 << 20, blockSize: 1 << 20, buffers: 2, progress: func(int64) {}}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if _, _, err := p.run(ctx2, cancel2, bytes.NewReader(data)); err == nil || !step.IsPermanent(err) {
		t.Fatalf("an oversized image was not refused: %v", err)
	}
}

// failingReader fails after n bytes: a truncated or broken decoder stream.
type failingReader struct {
	r io.Reader
	n int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	p = p[:min(len(p), f.n)]
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestPipelineRefusesATruncatedStream(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &pipeline{f: f, lbs: 512, limit: 1 << 30, blockSize: 1 << 20, buffers: 2, progress: func(int64) {}}
	_, _, err = p.run(ctx, cancel, &failingReader{r: bytes.NewReader(make([]byte, 4<<20)), n: 3 << 20})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a truncated stream ended with %v, want unexpected EOF", err)
	}
}

// TestResumingBodyContinuesWithRange breaks the connection in the middle of the body and
// checks that the reader continues at the right byte with a Range request.
func TestResumingBodyContinuesWithRange(t *testing.T) {
	dir := t.TempDir()
	content := make([]byte, 8<<20)
	for i := range content {
		content[i] = byte(i * 7 / 5)
	}
	if err := os.WriteFile(filepath.Join(dir, "img.raw"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := imagetest.Serve(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	e := &Executor{Source: client}
	srv.DropAfter.Store(3<<20 + 5)
	body, resp, err := newResumingBody(context.Background(), e.opener("/v1/images/img.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if resp.ContentLength != int64(len(content)) {
		t.Fatalf("content length %d", resp.ContentLength)
	}
	got, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("resumed stream differs (%d bytes, want %d)", len(got), len(content))
	}
	if body.resumes != 1 || srv.Requests.Load() != 2 {
		t.Fatalf("resumes %d, requests %d; want 1 and 2", body.resumes, srv.Requests.Load())
	}
}

// TestResumingBodyRefusesAChangedImage: when the file changes between the requests, the
// If-Range guard makes the server send the whole new file, and the reader must not splice it.
func TestResumingBodyRefusesAChangedImage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img.raw")
	if err := os.WriteFile(path, bytes.Repeat([]byte("old "), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := imagetest.Serve(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client, _ := srv.Client()
	e := &Executor{Source: client}
	srv.DropAfter.Store(1 << 20)
	body, _, err := newResumingBody(context.Background(), e.opener("/v1/images/img.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if _, err := io.ReadFull(body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Repeat([]byte("new "), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(body)
	if err == nil || !strings.Contains(err.Error(), "did not resume") {
		t.Fatalf("spliced a changed image: %v", err)
	}
}

func TestMissingImageIsPermanentWithHint(t *testing.T) {
	srv, err := imagetest.Serve(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client, _ := srv.Client()
	e := &Executor{Source: client}
	_, _, err = newResumingBody(context.Background(), e.opener("/v1/images/nope.raw.zst"))
	if shared.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("want a 404, got %v", err)
	}
	err = describeOpenError("/v1/images/nope.raw.zst", err)
	if !step.IsPermanent(err) || !strings.Contains(step.HintOf(err), "image directory") {
		t.Fatalf("a missing image must be permanent with a hint: %v", err)
	}
}
