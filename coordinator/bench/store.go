package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/shared"
)

// StoreOptions configures `rivet bench store`.
type StoreOptions struct {
	RivetBin string // the rivet binary to run coordinators from
	Writes   int    // committed writes per system
	Clients  int    // concurrent writers in the throughput run
	// LatencyClients writers measure commit latency under light load, where queueing
	// behind other writers does not hide the commit path itself.
	LatencyClients int
	Dir            string // scratch directory (removed after)
}

// StoreResult is one system's figures.
type StoreResult struct {
	System       string
	Nodes        int
	Writes       int
	Failed       int
	WritesPerSec float64       // throughput run
	P50, P99     time.Duration // latency run
	LoadP99      time.Duration // p99 in the throughput run, queueing included
}

// Store measures committed writes/s and commit latency for Rivet with 1 and 3
// coordinators and for a 3-member etcd, on the same workload: Writes writes of one
// registration-sized record (~1 KB) from Clients concurrent writers, round-robin over
// the members. Rivet's writes are real machine registrations through its HTTPS API
// (TLS, JSON decode, validation, Raft commit with fsync); etcd's are puts of the same
// bytes through its HTTP JSON gateway (no TLS).
func Store(ctx context.Context, w io.Writer, opts StoreOptions) ([]StoreResult, error) {
	if opts.Writes == 0 {
		opts.Writes = 5000
	}
	if opts.Clients == 0 {
		opts.Clients = 64
	}
	if opts.LatencyClients == 0 {
		opts.LatencyClients = 4
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		return nil, errors.New("etcd not found: install Debian's etcd-server (bash .ci/install-debs)")
	}
	dir, err := os.MkdirTemp(opts.Dir, "rivet-bench-store-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(w, "bench store: %d writes of a ~1 KB record, round-robin over members; throughput with %d "+
		"concurrent clients, latency with %d\n", opts.Writes, opts.Clients, opts.LatencyClients)
	var results []StoreResult
	for _, nodes := range []int{1, 3} {
		r, err := storeRivet(ctx, opts, filepath.Join(dir, fmt.Sprintf("rivet%d", nodes)), nodes)
		if err != nil {
			return nil, fmt.Errorf("rivet %d nodes: %w", nodes, err)
		}
		results = append(results, r)
		printStore(w, r)
	}
	r, err := storeEtcd(ctx, opts, filepath.Join(dir, "etcd"))
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	results = append(results, r)
	printStore(w, r)
	rivet3, etcd3 := results[1], results[2]
	fmt.Fprintf(w, "rivet-figure: store ratio rivet3_vs_etcd3 throughput=%.2fx p99_rivet3_ms=%.1f (goal >=1.0x, p99 < 20 ms)\n",
		rivet3.WritesPerSec/etcd3.WritesPerSec, ms(rivet3.P99))
	return results, nil
}

func printStore(w io.Writer, r StoreResult) {
	fmt.Fprintf(w, "rivet-figure: store system=%s nodes=%d writes=%d failed=%d writes_per_s=%.0f "+
		"commit_p50_ms=%.2f commit_p99_ms=%.2f loaded_p99_ms=%.1f\n",
		r.System, r.Nodes, r.Writes, r.Failed, r.WritesPerSec, ms(r.P50), ms(r.P99), ms(r.LoadP99))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func storeRivet(ctx context.Context, opts StoreOptions, dir string, nodes int) (StoreResult, error) {
	cluster, err := coordinatortest.Start(ctx, coordinatortest.Options{Bin: opts.RivetBin, Dir: dir, Nodes: nodes,
		ExtraArgs: []string{"--log-level", "warn"}})
	if err != nil {
		return StoreResult{}, err
	}
	defer cluster.Stop()
	clients := make([]*shared.Client, nodes)
	for i, n := range cluster.Nodes {
		clients[i] = cluster.Client(n).WithToken(cluster.EnrolToken)
	}
	write := func(ctx context.Context, i int) error {
		_, err := clients[i%nodes].Register(ctx, coordinatortest.RegisterRequest(i))
		return err
	}
	return drive(ctx, "rivet", nodes, opts, write)
}

// drive measures a system twice: throughput with opts.Clients writers, then commit
// latency with opts.LatencyClients writers (distinct keys, so both runs are new writes).
func drive(ctx context.Context, system string, nodes int, opts StoreOptions, write func(context.Context, int) error) (StoreResult, error) {
	// Warm up connections and the leader's caches; not measured.
	for i := range opts.Clients {
		if err := write(ctx, 1_000_000+i); err != nil {
			return StoreResult{}, fmt.Errorf("warm-up write: %w", err)
		}
	}
	load := run(ctx, opts.Writes, opts.Clients, 0, write)
	light := run(ctx, opts.Writes/4, opts.LatencyClients, 2_000_000, write)
	return StoreResult{System: system, Nodes: nodes, Writes: opts.Writes, Failed: load.failed + light.failed,
		WritesPerSec: load.perSec, P50: light.p50, P99: light.p99, LoadP99: load.p99}, nil
}

type runResult struct {
	failed   int
	perSec   float64
	p50, p99 time.Duration
}

// run makes n calls of write (keys offset..offset+n) from clients goroutines.
func run(ctx context.Context, n, clients, offset int, write func(context.Context, int) error) runResult {
	lat := make([]time.Duration, n)
	var failed int
	var mu sync.Mutex
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				t := time.Now()
				err := write(ctx, offset+i)
				lat[i] = time.Since(t)
				if err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	return runResult{failed: failed, perSec: float64(n-failed) / elapsed.Seconds(),
		p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}

// storeEtcd runs a 3-member etcd (Debian's etcd-server) on loopback and drives it.
func storeEtcd(ctx context.Context, opts StoreOptions, dir string) (StoreResult, error) {
	ports, err := freeTCPPorts(6)
	if err != nil {
		return StoreResult{}, err
	}
	var peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("e%d=http://127.0.0.1:%d", i+1, ports[3+i]))
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	var endpoints []string
	for i := range 3 {
		client := fmt.Sprintf("http://127.0.0.1:%d", ports[i])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[3+i])
		endpoints = append(endpoints, client)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return StoreResult{}, err
		}
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("e%d.log", i+1)))
		if err != nil {
			return StoreResult{}, err
		}
		defer logf.Close()
		cmd := exec.CommandContext(ctx, "etcd", "--name", fmt.Sprintf("e%d", i+1),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("e%d", i+1)),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "rivet-bench", "--log-level", "error")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return StoreResult{}, err
		}
		procs = append(procs, cmd)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: opts.Clients}, Timeout: 20 * time.Second}
	if err := waitEtcd(ctx, hc, endpoints); err != nil {
		return StoreResult{}, err
	}
	value := base64.StdEncoding.EncodeToString(registrationBytes())
	write := func(ctx context.Context, i int) error {
		key := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "/machines/m-%016x", i))
		body, _ := json.Marshal(map[string]string{"key": key, "value": value})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoints[i%3]+"/v3/kv/put", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd put: %s", resp.Status)
		}
		return nil
	}
	return drive(ctx, "etcd", 3, opts, write)
}

// registrationBytes is the JSON of one registration: etcd stores the same bytes Rivet does.
func registrationBytes() []byte {
	b, _ := json.Marshal(coordinatortest.RegisterRequest(42))
	return b
}

func waitEtcd(ctx context.Context, hc *http.Client, endpoints []string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		healthy := 0
		for _, e := range endpoints {
			resp, err := hc.Get(e + "/health")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(b), `"true"`) {
					healthy++
				}
			}
		}
		if healthy == len(endpoints) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("etcd members not healthy after 30s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func freeTCPPorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
