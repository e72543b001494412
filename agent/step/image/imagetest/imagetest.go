// Package imagetest gives tests and benches what the image step talks to: a disk image
// with a known digest, compressed like an operator would (zstd or gzip), served over HTTPS
// the way a coordinator serves /v1/images/ (http.ServeContent, so Range and If-Range
// work), behind a freshly made CA whose fingerprint a shared.Client can pin. Nothing in
// the agent imports it.
package imagetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/rivetmetal/rivet/shared"
)

// Image is a raw image and its compressed forms on disk.
type Image struct {
	Raw    string // path of the raw image
	Size   int64
	SHA256 string // hex digest of the raw image
}

// Build writes a raw image of size bytes (a multiple of 64 KiB) to dir/name.raw. The
// content looks like a real OS image to a compressor: about a third zero blocks (free
// space), the rest low-entropy data (16 symbols per byte), so zstd gets it to ~40%.
// The content is a pure function of seed.
func Build(dir, name string, size int64, seed uint64) (*Image, error) {
	f, err := os.Create(filepath.Join(dir, name+".raw"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rng := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	h := sha256.New()
	w := io.MultiWriter(f, h)
	block := make([]byte, 64<<10)
	zero := make([]byte, len(block))
	for done := int64(0); done < size; done += int64(len(block)) {
		b := block[:min(int64(len(block)), size-done)]
		if rng.IntN(3) == 0 {
			b = zero[:len(b)]
		} else {
			// Eight symbols 'a'..'p' at a time: each byte is 'a' plus four random bits,
			// and no byte carries into the next.
			for i := 0; i+8 <= len(b); i += 8 {
				binary.LittleEndian.PutUint64(b[i:], 0x6161616161616161+rng.Uint64()&0x0f0f0f0f0f0f0f0f)
			}
		}
		if _, err := w.Write(b); err != nil {
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	return &Image{Raw: f.Name(), Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Zstd compresses the raw image to dst with the zstd tool, as an operator would; like
// every file it compresses, zstd records the content size in the frame header. (The
// tool, not the Go encoder, because tests run with -race, which makes the Go encoder
// take minutes for a 1 GiB image.)
func (img *Image) Zstd(dst string) error {
	out, err := exec.Command("zstd", "-q", "-f", "-3", "-T2", img.Raw, "-o", dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("zstd %s: %v: %s (install Debian's zstd)", img.Raw, err, out)
	}
	return nil
}

// Gzip compresses the raw image to dst.
func (img *Image) Gzip(dst string) error {
	in, err := os.Open(img.Raw)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	enc, err := gzip.NewWriterLevel(out, gzip.BestSpeed)
	if err != nil {
		return err
	}
	if _, err := io.Copy(enc, in); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return out.Sync()
}

// Server serves a directory of images over HTTPS like a coordinator.
type Server struct {
	URL         string // https://127.0.0.1:port
	Fingerprint string // of the CA, for shared.ClientConfig.CAFingerprint
	Requests    atomic.Int64
	// DropAfter, when positive, makes the next response break its connection after that
	// many body bytes (then resets to 0): a network failure in the middle of a download.
	DropAfter atomic.Int64
	srv       *http.Server
	ln        net.Listener
}

// Serve starts an HTTPS server on 127.0.0.1 serving dir under shared.PathImages.
func Serve(dir string) (*Server, error) {
	cert, fingerprint, err := newCertificate()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "https://" + ln.Addr().String(), Fingerprint: fingerprint, ln: ln}
	mux := http.NewServeMux()
	mux.Handle(shared.PathImages, s.images(dir))
	s.srv = &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.ServeTLS(ln, "", "") }()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

// Client returns a shared.Client that pins the server's CA.
func (s *Server) Client() (*shared.Client, error) {
	return shared.NewClient(shared.ClientConfig{URLs: []string{s.URL}, CAFingerprint: s.Fingerprint, Token: "test-machine-token"})
}

// images serves files the way the coordinator does: a clean name under the image
// directory, http.ServeContent for Range, If-Range and Last-Modified.
func (s *Server) images(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Requests.Add(1)
		name := strings.TrimPrefix(path.Clean("/"+strings.TrimPrefix(r.URL.Path, shared.PathImages)), "/")
		if name == "" || strings.Contains(name, "/") {
			http.Error(w, `{"error":{"code":"not_found","message":"no such image"}}`, http.StatusNotFound)
			return
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":{"code":"not_found","message":"image %s not found"}}`, name)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if limit := s.DropAfter.Swap(0); limit > 0 {
			w = &droppingWriter{ResponseWriter: w, left: limit}
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, name, st.ModTime(), f)
	})
}

// droppingWriter aborts the response after a number of bytes.
type droppingWriter struct {
	http.ResponseWriter
	left int64
}

func (d *droppingWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > d.left {
		_, _ = d.ResponseWriter.Write(p[:d.left])
		d.left = 0
		if f, ok := d.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler) // the server closes the connection mid-body
	}
	d.left -= int64(len(p))
	return d.ResponseWriter.Write(p)
}

// newCertificate makes a CA and a leaf for 127.0.0.1 signed by it; the returned
// certificate carries the chain [leaf, CA], which is what a pinned client checks.
func newCertificate() (tls.Certificate, string, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rivet test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	return tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}, shared.Fingerprint(caDER), nil
}
