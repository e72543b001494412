package bench

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
)

// procMeter samples the coordinators' processes from /proc: CPU seconds (user + system,
// summed over restarts) and peak resident memory (VmHWM, the kernel's high-water mark).
type procMeter struct {
	mu    sync.Mutex
	nodes []*coordinatortest.Node
	// per node: CPU of earlier incarnations, last sample of the current one, its pid
	base, last []float64
	pid        []int
	peakRSS    []int64 // bytes
}

func newProcMeter(nodes []*coordinatortest.Node) *procMeter {
	n := len(nodes)
	return &procMeter{nodes: nodes, base: make([]float64, n), last: make([]float64, n),
		pid: make([]int, n), peakRSS: make([]int64, n)}
}

// run samples every interval until stop is closed.
func (p *procMeter) run(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p.sample()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (p *procMeter) sample() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, n := range p.nodes {
		pid := n.PID()
		if pid == 0 {
			continue
		}
		if pid != p.pid[i] {
			p.base[i] += p.last[i] // a new incarnation: keep what the old one used
			p.last[i], p.pid[i] = 0, pid
		}
		if cpu, ok := procCPUSeconds(pid); ok {
			p.last[i] = cpu
		}
		if hwm, ok := procStatusBytes(pid, "VmHWM:"); ok && hwm > p.peakRSS[i] {
			p.peakRSS[i] = hwm
		}
	}
}

// totals returns each node's CPU seconds and peak RSS in bytes so far.
func (p *procMeter) totals() (cpu []float64, peak []int64) {
	p.sample()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.nodes {
		cpu = append(cpu, p.base[i]+p.last[i])
		peak = append(peak, p.peakRSS[i])
	}
	return cpu, peak
}

// procCPUSeconds is the CPU time (user and system) process pid has used.
func procCPUSeconds(pid int) (float64, bool) {
	ticks, ok := procTicks(pid, 11, 13) // utime, stime
	return float64(ticks) / clockTicks, ok
}

func procStatusBytes(pid int, key string) (int64, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// loadAvg is /proc/loadavg's first three fields.
func loadAvg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// selfCPUSeconds is this process's CPU time (the simulated fleet's).
func selfCPUSeconds() float64 {
	cpu, _ := procCPUSeconds(os.Getpid())
	return cpu
}
