package tftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// testServer is a Server on 127.0.0.1 with a temporary boot directory.
type testServer struct {
	*Server
	addr string
	root string
}

// startServer serves cfg (Root defaults to a fresh temp dir) on a loopback port and
// closes it when the test ends, checking that Serve returned ErrServerClosed.
func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	if cfg.Root == "" {
		cfg.Root = t.TempDir()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(conn) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return &testServer{Server: s, addr: conn.LocalAddr().String(), root: cfg.Root}
}

// writeFile puts size pseudo-random bytes at name under the root and returns them.
func (ts *testServer) writeFile(t testing.TB, name string, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), 7))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	p := filepath.Join(ts.root, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFetchSizesAndOptions(t *testing.T) {
	ts := startServer(t, Config{})
	sizes := []int{0, 1, 511, 512, 513, 512 * 4, 1468 * 3, 1468*3 + 1, 100_000, 1<<20 + 7}
	optionSets := map[string]FetchOptions{
		"plain":           {},
		"blksize1468":     {BlockSize: 1468},
		"blksize1468-w8":  {BlockSize: 1468, WindowSize: 8},
		"window64":        {WindowSize: 64},
		"tsize":           {TSize: true},
		"all":             {BlockSize: 1024, WindowSize: 16, TSize: true, ServerTimeout: 2 * time.Second},
		"blksize-too-big": {BlockSize: 65464, WindowSize: 4},
	}
	for _, size := range sizes {
		name := fmt.Sprintf("f%d.bin", size)
		want := ts.writeFile(t, name, size)
		for label, opts := range optionSets {
			t.Run(fmt.Sprintf("%d/%s", size, label), func(t *testing.T) {
				r, err := FetchWithResult(testContext(t), ts.addr, name, opts)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(r.Data, want) {
					t.Fatalf("got %d bytes, want %d (content differs)", len(r.Data), len(want))
				}
				wantBlk := 512
				if opts.BlockSize > 0 {
					wantBlk = min(opts.BlockSize, DefaultMaxBlockSize)
				}
				wantWin := max(1, opts.WindowSize)
				if r.BlockSize != wantBlk || r.WindowSize != wantWin {
					t.Errorf("negotiated blksize=%d windowsize=%d, want %d and %d", r.BlockSize, r.WindowSize, wantBlk, wantWin)
				}
				wantTSize := int64(-1)
				if opts.TSize {
					wantTSize = int64(size)
				}
				if r.TSize != wantTSize {
					t.Errorf("tsize %d, want %d", r.TSize, wantTSize)
				}
			})
		}
	}
}

func TestWindowSizes(t *testing.T) {
	ts := startServer(t, Config{})
	want := ts.writeFile(t, "ipxe.bin", 300_000)
	for _, w := range []int{1, 8, 64} {
		t.Run(fmt.Sprint(w), func(t *testing.T) {
			r, err := FetchWithResult(testContext(t), ts.addr, "ipxe.bin", FetchOptions{BlockSize: 1468, WindowSize: w})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.Data, want) || r.WindowSize != w {
				t.Fatalf("windowsize %d: got %d bytes with window %d", w, len(r.Data), r.WindowSize)
			}
		})
	}
	// A window larger than the server allows is lowered, not refused.
	r, err := FetchWithResult(testContext(t), ts.addr, "ipxe.bin", FetchOptions{WindowSize: 1000})
	if err != nil || r.WindowSize != DefaultMaxWindowSize || !bytes.Equal(r.Data, want) {
		t.Fatalf("windowsize 1000: err=%v window=%d", err, r.WindowSize)
	}
}

func TestLargeBlockSizeWhenConfigured(t *testing.T) {
	// Loopback's MTU is 64 KiB, so a caller that knows its path may allow the RFC maximum.
	ts := startServer(t, Config{MaxBlockSize: 65464})
	want := ts.writeFile(t, "big.bin", 65464*3+17)
	r, err := FetchWithResult(testContext(t), ts.addr, "big.bin", FetchOptions{BlockSize: 65464, WindowSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r.BlockSize != 65464 || !bytes.Equal(r.Data, want) {
		t.Fatalf("blksize %d, %d bytes", r.BlockSize, len(r.Data))
	}
}

func TestBlockNumberRollsOver(t *testing.T) {
	// 8-byte blocks: 66,001 blocks, so block numbers wrap past 65535 to 0.
	ts := startServer(t, Config{})
	want := ts.writeFile(t, "wrap.bin", 8*66000)
	r, err := FetchWithResult(testContext(t), ts.addr, "wrap.bin", FetchOptions{BlockSize: 8, WindowSize: 64, TSize: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.BlockSize != 8 || !bytes.Equal(r.Data, want) {
		t.Fatalf("blksize %d, got %d bytes, want %d", r.BlockSize, len(r.Data), len(want))
	}
}

func TestTimeoutOptionIsAcknowledged(t *testing.T) {
	ts := startServer(t, Config{})
	ts.writeFile(t, "f", 10)
	c := newRawClient(t, ts.addr)
	c.send(encodeRequest(&request{filename: "f", mode: "octet", options: []option{{"TimeOut", "3"}, {"unknown", "x"}, {"blksize", "7"}}}))
	p := c.recv()
	oack, ok := p.(*oackPacket)
	if !ok {
		t.Fatalf("got %T, want OACK", p)
	}
	// blksize 7 is below the RFC minimum and unknown options are ignored: only timeout.
	if len(oack.options) != 1 || oack.options[0] != (option{"timeout", "3"}) {
		t.Fatalf("OACK options %v, want only timeout=3", oack.options)
	}
	c.send(encodeAck(0))
	if d, ok := c.recv().(*dataPacket); !ok || d.block != 1 || len(d.payload) != 10 {
		t.Fatalf("want DATA 1 with 10 bytes, got %+v", d)
	}
	c.send(encodeAck(1))
}

func TestConcurrentFetches(t *testing.T) {
	var mu sync.Mutex
	var hooked int
	ts := startServer(t, Config{OnTransfer: func(file, client string, n int64, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err == nil && file == "undionly.kpxe" && n == 74213 {
			hooked++
		}
	}})
	want := ts.writeFile(t, "undionly.kpxe", 74213)
	const clients = 200
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := []FetchOptions{{}, {BlockSize: 1468, WindowSize: 16}, {BlockSize: 1468, TSize: true}}[i%3]
			got, err := Fetch(testContext(t), ts.addr, "undionly.kpxe", opts)
			if err == nil && !bytes.Equal(got, want) {
				err = fmt.Errorf("client %d: content differs", i)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "all transfers to finish", testenv.Holds(func() bool { st := ts.Stats(); return st.Active == 0 && st.Completed == clients }, nil))
	// A client that resent its request on a slow machine makes a second transfer, which it
	// turns away (ERROR 5): every request beyond one per client must have failed.
	st := ts.Stats()
	if st.Requests-st.Failed != clients || st.BytesSent != clients*74213 {
		t.Errorf("stats %+v, want %d successful requests and %d bytes", st, clients, clients*74213)
	}
	mu.Lock()
	defer mu.Unlock()
	if hooked != clients {
		t.Errorf("OnTransfer saw %d successful transfers, want %d", hooked, clients)
	}
}

func TestCacheFollowsFileChanges(t *testing.T) {
	ts := startServer(t, Config{})
	ts.writeFile(t, "ipxe.efi", 5000)
	if _, err := Fetch(testContext(t), ts.addr, "ipxe.efi", FetchOptions{}); err != nil {
		t.Fatal(err)
	}
	// A different size is noticed.
	want := ts.writeFile(t, "ipxe.efi", 6000)
	if got, err := Fetch(testContext(t), ts.addr, "ipxe.efi", FetchOptions{}); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after resize: err=%v, %d bytes, want %d", err, len(got), len(want))
	}
	// Same size, new bytes, new mtime is noticed too.
	p := filepath.Join(ts.root, "ipxe.efi")
	same := bytes.Repeat([]byte{0xAB}, 6000)
	if err := os.WriteFile(p, same, 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	if got, err := Fetch(testContext(t), ts.addr, "ipxe.efi", FetchOptions{}); err != nil || !bytes.Equal(got, same) {
		t.Fatalf("after rewrite: err=%v, content differs", err)
	}
	// A deleted file is gone, not served from memory.
	os.Remove(p)
	var re *RemoteError
	if _, err := Fetch(testContext(t), ts.addr, "ipxe.efi", FetchOptions{}); !errors.As(err, &re) || re.Code != uint16(codeFileNotFound) {
		t.Fatalf("after delete: %v, want file not found", err)
	}
}

func TestLargeFileServedFromDisk(t *testing.T) {
	ts := startServer(t, Config{CacheFileSize: 1000})
	want := ts.writeFile(t, "big", 200_000)
	got, err := Fetch(testContext(t), ts.addr, "big", FetchOptions{BlockSize: 1468, WindowSize: 8, TSize: true})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("err=%v, %d bytes", err, len(got))
	}
	ts.files.mu.Lock()
	n := len(ts.files.cached)
	ts.files.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d files cached, want none above CacheFileSize", n)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Root: filepath.Join(t.TempDir(), "missing")},
		{Root: t.TempDir(), MaxBlockSize: 70000},
		{Root: t.TempDir(), MaxWindowSize: -1},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestServesIPv6(t *testing.T) {
	conn, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		testenv.Missing(t, "IPv6 loopback ::1: %v", err)
	}
	root := t.TempDir()
	want := []byte("ipv6 boot file")
	must(t, os.WriteFile(filepath.Join(root, "f"), want, 0o644))
	s, err := New(Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(conn)
	t.Cleanup(func() { s.Close() })
	got, err := Fetch(testContext(t), conn.LocalAddr().String(), "f", FetchOptions{BlockSize: 1468, WindowSize: 4})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("fetch over IPv6: %v", err)
	}
	s.Close()
	if err := s.Serve(conn); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close: %v, want ErrServerClosed", err)
	}
}

func TestFetchGivesUp(t *testing.T) {
	// Nobody listens on this port: the client resends, then stops at its limit or when
	// the context ends, whichever comes first.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_, err = Fetch(testContext(t), silent.LocalAddr().String(), "f", FetchOptions{Timeout: 10 * time.Millisecond, Retries: 2})
	if err == nil || !strings.Contains(err.Error(), "no answer after 2 retries") {
		t.Fatalf("fetch from a silent port: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = Fetch(ctx, silent.LocalAddr().String(), "f", FetchOptions{Timeout: 10 * time.Millisecond, Retries: 1 << 20})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fetch with an expiring context: %v, want DeadlineExceeded", err)
	}
}
