package boot

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// MinimumRAMMiB is the least RAM with which the RAM agent boots and registers (qemu -m,
// measured by integration/multinic_test.go; BENCHMARKS.md has the runs). With less the
// kernel runs out of memory while it unpacks the initramfs, before the agent can print
// anything: the operator then only sees the kernel's panic.
const MinimumRAMMiB = 128

// lowMemTotalMiB is the MemTotal under which the agent warns: the minimum plus a margin
// for an image write's buffers, less what the kernel keeps for itself (its code, page
// tables and reservations): Debian's 6.1 kernel reports MemTotal 80 MiB with qemu -m 128.
const lowMemTotalMiB = MinimumRAMMiB + 64 - 48

// warnLowMemory prints a console warning when the machine has little RAM. It runs
// early, so that the warning is on the console before anything runs out of memory.
func warnLowMemory(out *progress) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return
	}
	defer f.Close()
	if line := lowMemoryWarning(f); line != "" {
		out.printf("%s", line)
	}
}

// lowMemoryWarning reads /proc/meminfo and returns a warning, or "" when there is enough
// RAM or MemTotal cannot be read.
func lowMemoryWarning(meminfo io.Reader) string {
	sc := bufio.NewScanner(meminfo)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return ""
		}
		kib, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return ""
		}
		mib := kib / 1024
		if mib >= lowMemTotalMiB {
			return ""
		}
		return fmt.Sprintf("WARNING: low memory: the kernel reports %d MiB (MemTotal); the RAM agent needs a machine "+
			"with at least %d MiB of RAM and more to write images. If it stops or reboots, give it more RAM.", mib, MinimumRAMMiB)
	}
	return ""
}
