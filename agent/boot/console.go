package boot

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// openConsoles opens every console an operator may be watching: the ones the kernel
// writes to (/sys/class/tty/console/active, e.g. "tty0 ttyS0") plus ttyS0, which is
// where IPMI serial-over-LAN and qemu's -serial show up even when the command line
// has no console=ttyS0. Opening /dev/console as well would print every line twice.
func openConsoles() io.Writer {
	names := strings.Fields(readTrim("/sys/class/tty/console/active"))
	if !slices.Contains(names, "ttyS0") {
		names = append(names, "ttyS0")
	}
	var tee consoleTee
	for _, name := range names {
		// O_NOCTTY: PID 1 must not acquire a controlling terminal by accident.
		f, err := os.OpenFile("/dev/"+name, os.O_WRONLY|unix.O_NOCTTY, 0)
		if err == nil {
			tee.out = append(tee.out, f)
		}
	}
	if len(tee.out) == 0 {
		if f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
			tee.out = append(tee.out, f)
		} else {
			tee.out = append(tee.out, os.Stdout)
		}
	}
	return &tee
}

// consoleTee writes to every console and ignores the ones that fail (a ttyS0 with no
// UART behind it answers EIO), unlike io.MultiWriter which stops at the first error.
type consoleTee struct {
	mu  sync.Mutex
	out []io.Writer
}

func (t *consoleTee) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, w := range t.out {
		_, _ = w.Write(p)
	}
	return len(p), nil
}

// progress prints the numbered lines an operator watches on the console:
// "rivet: [3/6] network up: eth0 10.0.0.23/24".
type progress struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *progress) step(n int, format string, args ...any) {
	p.printf("[%d/%d] "+format, append([]any{n, TotalSteps}, args...)...)
}

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "rivet: "+format+"\n", args...)
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
