//go:build linux

package kexec

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

// TestDownloadChecksWhatItWasTold: a boot file loads only if its size and sha256 are the
// ones the API gave; anything else (a tampered or truncated file on the boot LAN) is
// refused before the kernel sees it.
func TestDownloadChecksWhatItWasTold(t *testing.T) {
	body := bytes.Repeat([]byte("rivet-kernel "), 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	defer srv.Close()
	sum := sha256.Sum256(body)
	good := shared.BootFile{URL: srv.URL + "/vmlinuz", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(body))}
	l := &Loader{HTTP: srv.Client()}
	var got bytes.Buffer
	if err := l.download(context.Background(), good, &got); err != nil || !bytes.Equal(got.Bytes(), body) {
		t.Fatalf("the right file: %v (%d bytes)", err, got.Len())
	}
	for _, tc := range []struct {
		what string
		f    shared.BootFile
		want string
	}{
		{"another digest", shared.BootFile{URL: good.URL, SHA256: strings.Repeat("0", 64), Size: good.Size}, "not loading it"},
		{"a longer file", shared.BootFile{URL: good.URL, SHA256: good.SHA256, Size: good.Size - 1}, "bytes, the coordinator said"},
		{"a shorter file", shared.BootFile{URL: good.URL, SHA256: good.SHA256, Size: good.Size + 1}, "bytes, the coordinator said"},
	} {
		err := l.download(context.Background(), tc.f, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.what, err, tc.want)
		}
	}
}
