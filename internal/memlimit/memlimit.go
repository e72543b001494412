// Package memlimit sets the Go runtime's soft memory limit from a flag value. Without a
// limit the garbage collector lets the heap grow to twice what is live before it runs,
// so a coordinator with 200 MB live at 10,000 machines peaks near 600 MB resident. With
// one, it collects sooner as the heap nears the limit (it is soft: when more is live, the
// heap grows past it rather than fail).
package memlimit

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// Auto is the flag value that takes the limit from the process's cgroup.
const Auto = "auto"

// cgroupShare is the part of a cgroup's memory limit given to the Go heap: the rest is
// for the runtime's own overhead, stacks and the file pages of the Raft log.
const cgroupShare = 0.9

// Parse turns a flag value into a limit in bytes, 0 meaning none: "off"; "auto" (90% of
// the cgroup's memory.max or memory.high, when one is set, as systemd's MemoryMax= or a
// container's limit does; none otherwise); or a size such as 420MiB, 2GiB, 500MB or a
// number of bytes.
func Parse(value string) (int64, error) {
	switch strings.ToLower(strings.TrimSpace(value)) {
	case "off", "none", "0":
		return 0, nil
	case Auto:
		limit := cgroupLimit()
		return int64(float64(limit) * cgroupShare), nil
	}
	return parseSize(value)
}

// Apply sets the runtime's soft limit; 0 leaves it unlimited.
func Apply(limit int64) {
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
}

var units = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

func parseSize(value string) (int64, error) {
	s := strings.TrimSpace(value)
	factor := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || !(n > 0) || n*float64(factor) > math.MaxInt64/2 { // !(n > 0) also refuses NaN
		return 0, fmt.Errorf("memory limit %q: want off, auto, or a size such as 420MiB or 2GiB", value)
	}
	return int64(n * float64(factor)), nil
}

// cgroupLimit is the lower of memory.max and memory.high of this process's cgroup (v2),
// or 0 when neither is set or there is no cgroup v2.
func cgroupLimit() int64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return lowestLimit(filepath.Join("/sys/fs/cgroup", path))
		}
	}
	return 0
}

func lowestLimit(dir string) int64 {
	var lowest int64
	for _, name := range []string{"memory.max", "memory.high"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64) // "max" fails: no limit
		if err == nil && n > 0 && (lowest == 0 || n < lowest) {
			lowest = n
		}
	}
	return lowest
}
