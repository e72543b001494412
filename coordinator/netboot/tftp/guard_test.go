package tftp

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// TestOnlyListedFilesAreServed: with Files set, a file of the boot directory that is
// not on the list (the kernel, a key someone left there) is "file not found".
func TestOnlyListedFilesAreServed(t *testing.T) {
	ts := startServer(t, Config{Files: []string{"undionly.kpxe"}})
	want := ts.writeFile(t, "undionly.kpxe", 3000)
	ts.writeFile(t, "vmlinuz", 3000)
	got, err := Fetch(testContext(t), ts.addr, "undionly.kpxe", FetchOptions{})
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("listed file: %d bytes, %v", len(got), err)
	}
	c := newRawClient(t, ts.addr)
	c.send(rrq("vmlinuz"))
	c.expectError(codeFileNotFound)
}

// TestPerSourceLimitDropsRequests: a source over its limit gets silence (firmware
// retries silence, not an ERROR), and each drop is counted and reported.
func TestPerSourceLimitDropsRequests(t *testing.T) {
	var mu sync.Mutex
	drops := map[string]int{}
	ts := startServer(t, Config{PerSource: 3, OnDrop: func(r string) { mu.Lock(); drops[r]++; mu.Unlock() }})
	c := newRawClient(t, ts.addr)
	for range 3 {
		c.send(rrq("missing"))
	}
	for range 3 {
		c.peer = nil
		c.expectError(codeFileNotFound)
	}
	// Everything beyond the limit in this second is dropped; a window may have rolled
	// over meanwhile, so count what the server says rather than assume it.
	c.peer = nil
	for range 50 {
		c.send(rrq("missing"))
	}
	testenv.Eventually(t, 10*time.Second, "53 datagrams accounted for", testenv.Holds(func() bool {
		st := ts.Stats()
		return st.Requests+st.Errors[ReasonRateLimited] == 53
	}, nil))
	mu.Lock()
	defer mu.Unlock()
	if st := ts.Stats(); st.Errors[ReasonRateLimited] == 0 || uint64(drops[ReasonRateLimited]) != st.Errors[ReasonRateLimited] {
		t.Fatalf("stats %+v, OnDrop saw %v", st, drops)
	}
}

// TestClientNamesAreQuotedAndFailuresThrottled: names that are not UTF-8 or carry line
// breaks reach the log quoted, and a flood of failing requests writes one line.
func TestClientNamesAreQuotedAndFailuresThrottled(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(lockedWriter{&mu, &buf}, nil))
	ts := startServer(t, Config{Logger: log})
	c := newRawClient(t, ts.addr)
	for i := range 100 {
		c.send(rrq(string([]byte{0xff, byte('a' + i%26)}) + "\nlevel=ERROR msg=forged"))
	}
	testenv.Eventually(t, 10*time.Second, "100 requests failed", testenv.Holds(func() bool { return ts.Stats().Failed == 100 }, nil))
	mu.Lock()
	defer mu.Unlock()
	out := buf.String()
	if n := strings.Count(out, "tftp: request failed"); n != 1 {
		t.Fatalf("%d log lines for 100 failed requests, want 1:\n%.3000s", n, out)
	}
	if !utf8.ValidString(out) || !strings.Contains(out, `\\xff`) || strings.Contains(out, "\nlevel=ERROR") {
		t.Fatalf("the client's name is not quoted in the log:\n%s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
