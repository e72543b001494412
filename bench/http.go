package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot"
)

// HTTPOptions configures the HTTP boot bench. Zero values take the defaults.
type HTTPOptions struct {
	Clients    int    // concurrent machines, each fetching kernel and initramfs; default 200
	Rounds     int    // rounds per server, alternating; the median is reported; default 3
	KernelSize int    // bytes of random "kernel" when Kernel is empty; default 8 MB
	InitrdSize int    // bytes of random "initramfs" when Initrd is empty; default 20 MB
	Kernel     string // a real kernel to serve instead
	Initrd     string // a real initramfs to serve instead
	Nginx      string // nginx binary; default nginx from PATH (package nginx-light)
}

func (o *HTTPOptions) httpDefaults() {
	orDefault(&o.Clients, 200)
	orDefault(&o.Rounds, 3)
	orDefault(&o.KernelSize, 8<<20)
	orDefault(&o.InitrdSize, 20<<20)
	orDefault(&o.Nginx, "nginx")
}

// httpFiles are the two boot files as served: name, size and digest.
type httpFile struct {
	name string
	size int64
	sum  [32]byte
}

// HTTP measures how fast Rivet's boot handler (netboot.Server.Run, http.ServeContent on
// an *os.File, which net/http hands to sendfile) serves kernel and initramfs to Clients
// machines booting at once, against nginx with sendfile on the same loopback with the
// same client, and prints one "rivet-figure:" line.
func HTTP(ctx context.Context, w io.Writer, opts HTTPOptions) error {
	opts.httpDefaults()
	nginx, err := exec.LookPath(opts.Nginx)
	if err != nil {
		return fmt.Errorf("http bench: %s not found: %w (apt-get install nginx-light)", opts.Nginx, err)
	}
	dir, err := os.MkdirTemp("", "rvb-http-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bootDir := filepath.Join(dir, "boot")
	files, err := httpBootDir(bootDir, opts)
	if err != nil {
		return err
	}

	rivetURL, stopRivet, err := httpStartRivet(ctx, bootDir, files)
	if err != nil {
		return fmt.Errorf("http bench: rivet: %w", err)
	}
	defer stopRivet()
	nginxURL, stopNginx, err := httpStartNginx(ctx, nginx, dir, bootDir)
	if err != nil {
		return fmt.Errorf("http bench: nginx: %w", err)
	}
	defer stopNginx()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: opts.Clients,
		DisableCompression: true, ReadBufferSize: 64 << 10}}
	defer client.CloseIdleConnections()
	bases := [2]string{rivetURL, nginxURL}
	names := [2]string{"rivet", "nginx"}
	for i, base := range bases { // both serve the very same bytes
		for _, f := range files {
			if err := httpGet(ctx, client, base+"/"+f.name, f, true); err != nil {
				return fmt.Errorf("http bench: %s: %w", names[i], err)
			}
		}
	}
	walls := [2][]time.Duration{}
	for range opts.Rounds {
		for i, base := range bases {
			d, err := httpRound(ctx, client, base, files, opts.Clients)
			if err != nil {
				return fmt.Errorf("http bench: %s: %w", names[i], err)
			}
			walls[i] = append(walls[i], d)
		}
	}
	total := float64(opts.Clients) * float64(files[0].size+files[1].size) / 1e6
	var mbps [2]float64
	for i := range walls {
		mbps[i] = total / medianBy(walls[i], time.Duration.Seconds).Seconds()
	}
	_, err = fmt.Fprintf(w, "rivet-figure: boot http clients=%d kernel_bytes=%d initrd_bytes=%d rivet_MBps=%.0f nginx_MBps=%.0f ratio=%.2fx\n",
		opts.Clients, files[0].size, files[1].size, mbps[0], mbps[1], mbps[0]/mbps[1])
	return err
}

// httpBootDir writes (or copies) the kernel and initramfs into a world-readable
// directory: nginx's workers run as nobody.
func httpBootDir(dir string, opts HTTPOptions) ([2]httpFile, error) {
	var files [2]httpFile
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return files, err
	}
	os.Chmod(filepath.Dir(dir), 0o755)
	for i, spec := range []struct {
		name, src string
		size      int
	}{{"vmlinuz", opts.Kernel, opts.KernelSize}, {"initrd.zst", opts.Initrd, opts.InitrdSize}} {
		var data []byte
		if spec.src != "" {
			b, err := os.ReadFile(spec.src)
			if err != nil {
				return files, fmt.Errorf("http bench: %w", err)
			}
			data = b
		} else {
			data = make([]byte, spec.size)
			rand.Read(data)
		}
		if err := os.WriteFile(filepath.Join(dir, spec.name), data, 0o644); err != nil {
			return files, err
		}
		files[i] = httpFile{name: spec.name, size: int64(len(data)), sum: sha256.Sum256(data)}
	}
	return files, nil
}

func httpStartRivet(ctx context.Context, bootDir string, files [2]httpFile) (string, func(), error) {
	port, err := httpFreePort()
	if err != nil {
		return "", nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	srv, err := netboot.NewServer(netboot.Config{
		ServerIP: net.IPv4(127, 0, 0, 1), HTTPAddr: addr, BootDir: bootDir,
		Kernel: files[0].name, Initrd: files[1].name, Mode: netboot.ModeOff, NoTFTP: true,
		APIURLs:       func() []string { return []string{"https://127.0.0.1:7443"} },
		CAFingerprint: func() string { return "" },
	})
	if err != nil {
		return "", nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(rctx) }()
	stop := func() { cancel(); <-ran }
	base := "http://" + addr + "/boot/files"
	if err := httpWaitReady(ctx, base+"/"+files[0].name, ran); err != nil {
		stop()
		return "", nil, err
	}
	return base, stop, nil
}

// httpStartNginx runs nginx in the foreground with a private prefix and configuration
// on a free loopback port, in its own process group, and waits until it serves.
func httpStartNginx(ctx context.Context, bin, dir, bootDir string) (string, func(), error) {
	port, err := httpFreePort()
	if err != nil {
		return "", nil, err
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000;
    default_type application/octet-stream;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen 127.0.0.1:%[2]d;
        location /boot/files/ { alias %[3]s/; }
    }
}
`, dir, port, bootDir)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-p", dir, "-c", confPath)
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		// SIGTERM to the master: it stops and reaps its workers. The group kill is the
		// fallback, which would leave the workers for init to reap.
		syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	base := fmt.Sprintf("http://127.0.0.1:%d/boot/files", port)
	if err := httpWaitReady(ctx, base+"/vmlinuz", exited); err != nil {
		stop()
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return "", nil, fmt.Errorf("%w; stderr: %s; error.log: %s", err, bytes.TrimSpace(stderr.Bytes()), bytes.TrimSpace(log))
	}
	return base, stop, nil
}

// httpWaitReady polls url until it answers 200, the server exits, or 10 s pass.
func httpWaitReady(ctx context.Context, url string, exited <-chan error) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		req, _ := http.NewRequestWithContext(ctx, "HEAD", url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("server exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not serving within 10 s", url)
}

// httpRound starts every client at once; each fetches the kernel, then the initramfs,
// as iPXE does. It returns the time until the last byte of the last client arrived.
func httpRound(ctx context.Context, c *http.Client, base string, files [2]httpFile, clients int) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := make(chan struct{})
	for range clients {
		wg.Go(func() {
			<-start
			for _, f := range files {
				if err := httpGet(ctx, c, base+"/"+f.name, f, false); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t0)
	close(errs)
	if err := <-errs; err != nil {
		return 0, fmt.Errorf("%d of %d clients failed, first: %w", len(errs)+1, clients, err)
	}
	return wall, nil
}

// httpGet downloads one file and checks its status and size and, with digest, its
// SHA-256 (the timed rounds do not hash).
func httpGet(ctx context.Context, c *http.Client, url string, f httpFile, digest bool) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var sink io.Writer = io.Discard
	h := sha256.New()
	if digest {
		sink = h
	}
	n, err := io.Copy(sink, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || n != f.size {
		return fmt.Errorf("GET %s: %s, %d bytes", url, resp.Status, n)
	}
	if digest && !bytes.Equal(h.Sum(nil), f.sum[:]) {
		return fmt.Errorf("GET %s: the digest differs from the file", url)
	}
	return nil
}

func httpFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
