package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot/tftp"
)

// TFTPOptions configures the TFTP boot bench. Zero values take the defaults.
type TFTPOptions struct {
	File       string // file to serve; default /usr/lib/ipxe/undionly.kpxe (try ipxe.efi for 851 kB)
	Clients    int    // concurrent fetches per round; default 200
	Rounds     int    // rounds per server, alternating; the median round is reported; default 5
	BlockSize  int    // blksize asked of both servers; default 1468
	WindowSize int    // windowsize asked of both servers (tftpd-hpa ignores it); default 16
	TFTPD      string // tftpd-hpa binary; default in.tftpd from PATH
}

func (o *TFTPOptions) tftpDefaults() {
	orDefault(&o.File, "/usr/lib/ipxe/undionly.kpxe")
	orDefault(&o.Clients, 200)
	orDefault(&o.Rounds, 5)
	orDefault(&o.BlockSize, 1468)
	orDefault(&o.WindowSize, 16)
	orDefault(&o.TFTPD, "in.tftpd")
}

// tftpRound is one round: every client fetched the file once.
type tftpRound struct {
	wall   time.Duration
	cpu    time.Duration // CPU time of server and clients together
	resent int
}

// tftpSide is what was measured for one server.
type tftpSide struct {
	median  tftpRound
	meanCPU time.Duration
	window  int
}

// TFTP measures how fast Rivet's TFTP server hands the iPXE binary to a rack of machines
// booting at once, against Debian's tftpd-hpa on the same loopback with the same client,
// and prints one "rivet-figure:" line.
func TFTP(ctx context.Context, w io.Writer, opts TFTPOptions) error {
	opts.tftpDefaults()
	want, err := os.ReadFile(opts.File)
	if err != nil {
		return fmt.Errorf("tftp bench: read %s: %w (install the ipxe package or pass another file)", opts.File, err)
	}
	tftpdPath, err := exec.LookPath(opts.TFTPD)
	if err != nil {
		return fmt.Errorf("tftp bench: %s not found: %w (apt-get install tftpd-hpa)", opts.TFTPD, err)
	}
	dir, err := tftpBootDir(opts.File, want)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	name := filepath.Base(opts.File)

	rivetAddr, stopRivet, err := tftpStartRivet(dir, opts.Clients)
	if err != nil {
		return err
	}
	defer stopRivet()
	hpaAddr, hpaPID, stopHPA, err := tftpStartHPA(ctx, tftpdPath, dir, name)
	if err != nil {
		return err
	}
	defer stopHPA()
	// Wall time depends on how the machine's CPUs are shared (tftpd-hpa forks a process
	// per client, Rivet is one process), so CPU time is reported beside it.
	cpu := [2]func() time.Duration{processCPU, func() time.Duration { return processCPU() + tftpTreeCPU(hpaPID) }}
	rivet, hpa, err := tftpMeasure(ctx, [2]string{rivetAddr, hpaAddr}, cpu, name, want, opts)
	if err != nil {
		return err
	}

	mb := float64(len(want)*opts.Clients) / 1e6
	rs, hs := rivet.median.wall.Seconds(), hpa.median.wall.Seconds()
	_, err = fmt.Fprintf(w, "rivet-figure: boot tftp clients=%d file=%s bytes=%d blksize=%d rivet_window=%d tftpd_hpa_window=%d "+
		"rivet_s=%.3f tftpd_hpa_s=%.3f rivet_MBps=%.1f tftpd_hpa_MBps=%.1f rivet_resent=%d tftpd_hpa_resent=%d "+
		"rivet_cpu_s=%.2f tftpd_hpa_cpu_s=%.2f cpu_ratio=%.1fx ratio=%.1fx\n",
		opts.Clients, name, len(want), opts.BlockSize, rivet.window, hpa.window,
		rs, hs, mb/rs, mb/hs, rivet.median.resent, hpa.median.resent,
		rivet.meanCPU.Seconds(), hpa.meanCPU.Seconds(), hpa.meanCPU.Seconds()/rivet.meanCPU.Seconds(), hs/rs)
	return err
}

// tftpBootDir makes a world-readable directory holding the file: tftpd-hpa drops to the
// tftp user after chroot, and the iPXE files in /usr/lib/ipxe may be symlinks.
func tftpBootDir(file string, data []byte) (string, error) {
	dir, err := os.MkdirTemp("", "rvt-tftp-bench-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, filepath.Base(file)), data, 0o644)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("tftp bench: boot directory: %w", err)
	}
	return dir, nil
}

func tftpStartRivet(dir string, clients int) (string, func(), error) {
	srv, err := tftp.New(tftp.Config{Root: dir, MaxTransfers: max(tftp.DefaultMaxTransfers, 2*clients)})
	if err != nil {
		return "", nil, err
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return "", nil, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(conn) }()
	return conn.LocalAddr().String(), func() { srv.Close(); <-served }, nil
}

// tftpStartHPA runs in.tftpd in the foreground on a free loopback port, in its own process
// group so that its per-request children are stopped with it, and waits until it serves.
func tftpStartHPA(ctx context.Context, path, dir, name string) (string, int, func(), error) {
	port, err := tftpFreePort()
	if err != nil {
		return "", 0, nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var stderr bytes.Buffer
	cmd := exec.Command(path, "-L", "-s", dir, "-a", addr)
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, fmt.Errorf("tftp bench: start %s: %w", path, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := tftp.Fetch(fctx, addr, name, tftp.FetchOptions{Timeout: 100 * time.Millisecond, Retries: 1})
		cancel()
		if err == nil {
			return addr, cmd.Process.Pid, stop, nil
		}
		select {
		case <-exited:
			return "", 0, nil, fmt.Errorf("tftp bench: %s exited: %s", path, bytes.TrimSpace(stderr.Bytes()))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", 0, nil, fmt.Errorf("tftp bench: %s on %s not serving: %v; stderr: %s", path, addr, err, stderr.Bytes())
		}
	}
}

func tftpFreePort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// tftpMeasure warms both servers up with one fetch each, then alternates rounds between
// them, so that load from elsewhere on the machine falls on both alike, and returns the
// median round of each.
func tftpMeasure(ctx context.Context, addrs [2]string, cpu [2]func() time.Duration, name string, want []byte, opts TFTPOptions) (rivet, hpa tftpSide, err error) {
	fo := tftp.FetchOptions{BlockSize: opts.BlockSize, WindowSize: opts.WindowSize, TSize: true}
	sides := [2]*tftpSide{&rivet, &hpa}
	labels := [2]string{"rivet", "tftpd-hpa"}
	rounds := [2][]tftpRound{}
	for i, addr := range addrs {
		warm, err := tftp.FetchWithResult(ctx, addr, name, fo)
		if err != nil {
			return rivet, hpa, fmt.Errorf("tftp bench: %s: %w", labels[i], err)
		}
		sides[i].window = warm.WindowSize
	}
	for range opts.Rounds {
		for i, addr := range addrs {
			before := cpu[i]()
			r, err := tftpRun(ctx, addr, name, want, fo, opts.Clients)
			if err != nil {
				return rivet, hpa, fmt.Errorf("tftp bench: %s: %w", labels[i], err)
			}
			r.cpu = cpu[i]() - before
			sides[i].meanCPU += r.cpu / time.Duration(opts.Rounds)
			rounds[i] = append(rounds[i], r)
		}
	}
	for i := range sides {
		sides[i].median = medianBy(rounds[i], func(r tftpRound) time.Duration { return r.wall })
	}
	return rivet, hpa, nil
}

// tftpRun starts all clients at once and times until the last one has the whole file.
func tftpRun(ctx context.Context, addr, name string, want []byte, fo tftp.FetchOptions, clients int) (tftpRound, error) {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		resent int
		errs   []error
	)
	start := make(chan struct{})
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := tftp.FetchWithResult(ctx, addr, name, fo)
			if err == nil && !bytes.Equal(r.Data, want) {
				err = fmt.Errorf("received %d bytes that differ from the file", len(r.Data))
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else {
				resent += r.Resent
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t0)
	if len(errs) > 0 {
		return tftpRound{}, fmt.Errorf("%d of %d fetches failed, first: %w", len(errs), clients, errs[0])
	}
	return tftpRound{wall: wall, resent: resent}, nil
}

// tftpTreeCPU is the CPU time of process pid and of the children it has reaped. It first
// waits (up to 2 s) for pid's children to exit, so a finished round is fully counted.
func tftpTreeCPU(pid int) time.Duration {
	children := fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if b, err := os.ReadFile(children); err != nil || len(bytes.TrimSpace(b)) == 0 {
			break
		}
	}
	ticks, _ := procTicks(pid, 11, 15) // utime, stime, cutime, cstime
	return time.Duration(ticks) * time.Second / clockTicks
}
