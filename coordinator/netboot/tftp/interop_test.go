package tftp

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// Interoperability with the TFTP clients Debian ships: tftp-hpa (no options, lock-step)
// and busybox (blksize and tsize).

func runClient(t *testing.T, dir, bin string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	return cmd.CombinedOutput()
}

func TestInteropTftpHpaClient(t *testing.T) {
	bin := testenv.RequireCommand(t, "tftp")
	ts := startServer(t, Config{})
	host, port, _ := net.SplitHostPort(ts.addr)
	for _, size := range []int{0, 512 * 8, 74213, 1 << 20} {
		name := "f" + string(rune('a'+size%26)) + ".bin"
		want := ts.writeFile(t, name, size)
		dir := t.TempDir()
		out, err := runClient(t, dir, bin, host, port, "-m", "binary", "-c", "get", name)
		if err != nil {
			t.Fatalf("tftp get %s (%d bytes): %v\n%s", name, size, err, out)
		}
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("tftp get %s: %d bytes received, want %d (%v)", name, len(got), len(want), err)
		}
	}

	// A put is refused and the client says so.
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "up.bin"), []byte("data"), 0o644))
	out, _ := runClient(t, dir, bin, host, port, "-m", "binary", "-c", "put", "up.bin")
	if !bytes.Contains(out, []byte("read-only")) {
		t.Errorf("tftp put: output %q, want the server's read-only error", out)
	}
	if _, err := os.Stat(filepath.Join(ts.root, "up.bin")); err == nil {
		t.Error("a put created a file in the boot directory")
	}
	// A traversal attempt reports an error and writes nothing useful.
	out, _ = runClient(t, dir, bin, host, port, "-m", "binary", "-c", "get", "../../etc/passwd", "passwd")
	if !bytes.Contains(out, []byte("Access violation")) && !bytes.Contains(out, []byte("access violation")) {
		t.Errorf("tftp get ../../etc/passwd: output %q, want access violation", out)
	}
}

func TestInteropBusyboxClient(t *testing.T) {
	bin := testenv.RequireCommand(t, "busybox")
	if out, err := exec.Command(bin, "tftp").CombinedOutput(); bytes.Contains(out, []byte("applet not found")) {
		testenv.Missing(t, "busybox with the tftp applet (busybox-static): %v", err)
	}
	ts := startServer(t, Config{})
	host, port, _ := net.SplitHostPort(ts.addr)
	for _, blk := range []string{"512", "1468", "8192"} {
		for _, size := range []int{1468 * 4, 74213} {
			want := ts.writeFile(t, "ipxe.bin", size)
			dir := t.TempDir()
			out, err := runClient(t, dir, bin, "tftp", "-g", "-r", "ipxe.bin", "-l", "out.bin", "-b", blk, host, port)
			if err != nil {
				t.Fatalf("busybox tftp -b %s: %v\n%s", blk, err, out)
			}
			got, err := os.ReadFile(filepath.Join(dir, "out.bin"))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("busybox tftp -b %s, %d bytes: got %d (%v)", blk, size, len(got), err)
			}
		}
	}
	testenv.Eventually(t, 10*time.Second, "transfers to finish", testenv.Holds(func() bool { st := ts.Stats(); return st.Active == 0 && st.Completed == 6 }, nil))
}
