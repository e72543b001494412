package bench

import (
	"cmp"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// orDefault sets *p to def when it is unset: zero or negative, or the empty string.
func orDefault[T cmp.Ordered](p *T, def T) {
	var zero T
	if *p <= zero {
		*p = def
	}
}

// medianBy is the median of xs by key (the upper one of an even count); xs is not changed.
func medianBy[T any, K cmp.Ordered](xs []T, key func(T) K) T {
	s := slices.Clone(xs)
	slices.SortFunc(s, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	return s[len(s)/2]
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// procStat is /proc/PID/stat from its third field (the state) on: the command name
// before it may hold spaces, so fields are counted after its closing paren. Field n of
// proc(5) is at index n-3: utime, stime, cutime, cstime at 11 to 14.
func procStat(pid int) ([]string, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	s := string(data)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:]), true
}

// procTicks sums fields from to to-1 of procStat, clock ticks.
func procTicks(pid, from, to int) (int64, bool) {
	f, ok := procStat(pid)
	if !ok || len(f) < to {
		return 0, false
	}
	var ticks int64
	for _, v := range f[from:to] {
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return ticks, true
}
