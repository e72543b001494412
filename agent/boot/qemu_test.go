package boot_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/initramfs"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// Reference from docs/lab-notes.md ("A busybox /init as the reference boot"): a busybox /init with direct -kernel/-initrd
// boot and user-mode networking reached its HTTP callback 4.56 s after qemu started.
const busyboxCallbackSeconds = 4.56

// TestPrepareBootsInQemu boots Debian's kernel with an initramfs built by initramfs.Build
// whose /init is bootprobe (boot.Prepare, then an HTTP callback, then power-off) in a
// TCG qemu VM with a virtio NIC on user-mode networking and a virtio disk, and checks
// that the callback arrives with the leased address and the disk's serial.
func TestPrepareBootsInQemu(t *testing.T) {
	testenv.Long(t)
	qemu := testenv.RequireCommand(t, "qemu-system-x86_64")
	testenv.RequireCommand(t, "apt-get")
	testenv.RequireCommand(t, "dpkg-deb")
	work := t.TempDir()
	log := slog.New(slog.NewTextHandler(tLog{t}, nil))

	probe := filepath.Join(work, "bootprobe")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", probe, "./internal/bootprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building bootprobe: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kernel, err := initramfs.FetchKernel(ctx, log, filepath.Join(testenv.RepoRoot(t), "build", "kernel"))
	if err != nil {
		testenv.Missing(t, "Debian kernel package: %v", err)
	}
	buildStart := time.Now()
	res, err := initramfs.Build(ctx, initramfs.Spec{Agent: probe, Kernel: kernel, OutDir: filepath.Join(work, "boot"), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	buildSeconds := time.Since(buildStart).Seconds()

	t.Logf("rivet-figure: initramfs build_s=%.2f size_mb=%.2f kernel_mb=%.2f modules=%d (goal <= 25 MB: %.2f of budget; /init is bootprobe, %.1f MB)",
		buildSeconds, mb(res.CompressedSize), mb(res.KernelSize), len(res.Modules), mb(res.CompressedSize)/25, mb(fileSize(t, probe)))

	// With a virtio-rng device the kernel's RNG is seeded by the virtio_rng driver; without
	// one (and without RDRAND under TCG) boot.Prepare must get it seeded from CPU jitter.
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"virtio-rng", []string{"-device", "virtio-rng-pci"}},
		{"no-rng", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, seconds, out := bootVM(t, qemu, res, tc.extra)
			checkCallback(t, q, out, kernel.Release)
			t.Logf("rivet-figure: boot %s qemu_to_callback_s=%.2f busybox_reference_s=%.2f ratio=%.2f (TCG, direct -kernel, user-net)",
				tc.name, seconds, busyboxCallbackSeconds, seconds/busyboxCallbackSeconds)
		})
	}
}

// bootVM boots the kernel and initramfs with a virtio NIC on user-mode networking and a
// virtio disk, waits for bootprobe's callback and for the VM to power off, and returns
// the callback's query, the seconds from qemu start to the callback, and the console.
func bootVM(t *testing.T, qemu string, res initramfs.Result, extra []string) (url.Values, float64, string) {
	work := t.TempDir()
	hits := make(chan url.Values, 4)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cb" {
			hits <- r.URL.Query()
		}
		fmt.Fprintln(w, "ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	disk := filepath.Join(work, "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 64<<20); err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(work, "serial.log")
	args := []string{
		"-accel", "tcg", "-m", "512", "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
		"-serial", "file:" + console,
		"-kernel", res.KernelPath, "-initrd", res.InitramfsPath,
		"-append", fmt.Sprintf("console=ttyS0 panic=-1 rivet.url=http://10.0.2.2:%d/cb", port),
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
		"-drive", "file=" + disk + ",if=none,id=d0,format=raw", "-device", "virtio-blk-pci,drive=d0,serial=" + diskSerial,
	}
	cmd := exec.Command(qemu, append(args, extra...)...)
	exited := make(chan struct{}) // closed when qemu has exited; waitErr is then set
	var waitErr error
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // no-op once qemu powered off by itself
		<-exited
	})

	var q url.Values
	select {
	case q = <-hits:
	case <-exited:
		t.Fatalf("qemu exited before the callback (%v); console:\n%s", waitErr, readFile(console))
	case <-time.After(90 * time.Second):
		t.Fatalf("no callback within 90 s; console:\n%s", readFile(console))
	}
	seconds := time.Since(start).Seconds()
	select {
	case <-exited: // bootprobe powered the VM off
	case <-time.After(30 * time.Second):
		t.Errorf("VM did not power off within 30 s of the callback")
	}
	return q, seconds, readFile(console)
}

const diskSerial = "rvt-disk-0042"

func checkCallback(t *testing.T, q url.Values, console, release string) {
	t.Helper()
	if q.Get("ip") != "10.0.2.15" || q.Get("prefix") != "10.0.2.15/24" || q.Get("gw") != "10.0.2.2" || q.Get("nic") != "eth0" {
		t.Errorf("callback network facts %v; want eth0 10.0.2.15/24 via 10.0.2.2 (qemu user-net)", q)
	}
	if !strings.Contains(q.Get("disks"), "vda:"+diskSerial) {
		t.Errorf("callback disks %q; want vda:%s (virtio_blk loaded by modalias)", q.Get("disks"), diskSerial)
	}
	for _, m := range []string{"virtio_pci", "virtio_net", "virtio_blk"} {
		if !strings.Contains(","+q.Get("modules")+",", ","+m+",") {
			t.Errorf("modules %q lack %s", q.Get("modules"), m)
		}
	}
	if q.Get("pid1") != "true" {
		t.Errorf("bootprobe was not PID 1")
	}
	for _, want := range []string{
		"rivet: [1/6] system ready: kernel " + release,
		"rivet: [2/6] drivers loaded: ",
		"rivet: [3/6] network up: eth0 10.0.2.15/24 via 10.0.2.2",
		"rivet: [6/6] probe done, powering off",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s", console)
		return
	}
	for _, line := range strings.Split(console, "\n") {
		if strings.Contains(line, "rivet:") || strings.Contains(line, "crng") || strings.Contains(line, "Run /init") {
			t.Log(strings.TrimSpace(line))
		}
	}
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

func fileSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

type tLog struct{ t *testing.T }

func (w tLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
