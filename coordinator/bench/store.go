package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
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
	"github.com/rivetmetal/rivet/coordinator/pki"
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
	// ProfileDir, when set, receives a CPU profile of each node of the 3-node Rivet
	// cluster taken during its throughput run (rivet3-<node>.pprof), for `go tool pprof`.
	ProfileDir string

	onLoad func() (wait func() error) // called as the throughput run starts
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
// the members, each writer with its own connection to each member (as machines have). Rivet's writes are real machine registrations through its HTTPS API
// (TLS, JSON decode, validation, Raft commit with fsync); etcd's are puts of the same
// bytes through its JSON gateway, once over HTTPS with the same client TLS setup (the
// same workload, the ratio that counts) and once over plain HTTP (etcd's default).
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
	for _, secure := range []bool{true, false} {
		r, err := storeEtcd(ctx, opts, filepath.Join(dir, fmt.Sprintf("etcd-tls-%v", secure)), secure)
		if err != nil {
			return nil, fmt.Errorf("etcd: %w", err)
		}
		results = append(results, r)
		printStore(w, r)
	}
	rivet3, etcdTLS, etcdPlain := results[1], results[2], results[3]
	fmt.Fprintf(w, "rivet-figure: store ratio rivet3_vs_etcd3 throughput=%.2fx (etcd over HTTPS, the same workload; "+
		"%.2fx vs etcd over plain HTTP) p99_rivet3_ms=%.1f (goal >=1.0x, p99 < 20 ms)\n",
		rivet3.WritesPerSec/etcdTLS.WritesPerSec, rivet3.WritesPerSec/etcdPlain.WritesPerSec, ms(rivet3.P99))
	return results, nil
}

func printStore(w io.Writer, r StoreResult) {
	fmt.Fprintf(w, "rivet-figure: store system=%s nodes=%d writes=%d failed=%d writes_per_s=%.0f "+
		"commit_p50_ms=%.2f commit_p99_ms=%.2f loaded_p99_ms=%.1f\n",
		r.System, r.Nodes, r.Writes, r.Failed, r.WritesPerSec, ms(r.P50), ms(r.P99), ms(r.LoadP99))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func storeRivet(ctx context.Context, opts StoreOptions, dir string, nodes int) (StoreResult, error) {
	profile := opts.ProfileDir != "" && nodes == 3
	args := []string{"--log-level", "warn"}
	if profile {
		args = append(args, "--debug-pprof")
	}
	cluster, err := coordinatortest.Start(ctx, coordinatortest.Options{Bin: opts.RivetBin, Dir: dir, Nodes: nodes, ExtraArgs: args})
	if err != nil {
		return StoreResult{}, err
	}
	defer cluster.Stop()
	// One client (one connection) per writer and node, as every machine has its own.
	clients := make([][]*shared.Client, nodes)
	for i, n := range cluster.Nodes {
		for range opts.Clients {
			clients[i] = append(clients[i], cluster.Client(n).WithToken(cluster.EnrolToken))
		}
	}
	write := func(ctx context.Context, i int) error {
		_, err := clients[i%nodes][i/nodes%opts.Clients].Register(ctx, coordinatortest.RegisterRequest(i))
		return err
	}
	if profile {
		opts.onLoad = func() func() error { return profileNodes(ctx, cluster, opts.ProfileDir) }
	}
	return drive(ctx, "rivet", nodes, opts, write)
}

// profileNodes starts a 5 s CPU profile of every node; the returned func waits for
// them and writes DIR/rivet3-<node>.pprof.
func profileNodes(ctx context.Context, cluster *coordinatortest.Cluster, dir string) func() error {
	errs := make(chan error, len(cluster.Nodes))
	for _, n := range cluster.Nodes {
		go func() {
			resp, err := cluster.Client(n).Open(ctx, "/debug/pprof/profile?seconds=5", nil)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(dir, "rivet3-"+n.ID+".pprof"))
			if err == nil {
				_, err = io.Copy(f, resp.Body)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			errs <- err
		}()
	}
	return func() error {
		var first error
		for range cluster.Nodes {
			if err := <-errs; err != nil && first == nil {
				first = fmt.Errorf("CPU profile: %w", err)
			}
		}
		return first
	}
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
	var profiled func() error
	if opts.onLoad != nil {
		profiled = opts.onLoad()
	}
	load := run(ctx, opts.Writes, opts.Clients, 0, write)
	if profiled != nil {
		if err := profiled(); err != nil {
			return StoreResult{}, err
		}
	}
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
// With secure, clients speak HTTPS to etcd exactly as they do to Rivet (a certificate
// from a CA made like Rivet's, the same pinned TLS client configuration): the same
// workload. Without, plain HTTP, etcd's default. Peers talk plain TCP in both, as
// Rivet's Raft transport does.
func storeEtcd(ctx context.Context, opts StoreOptions, dir string, secure bool) (StoreResult, error) {
	ports, err := freeTCPPorts(6)
	if err != nil {
		return StoreResult{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return StoreResult{}, err
	}
	scheme, tlsArgs, tlsClient := "http", []string(nil), (*tls.Config)(nil)
	if secure {
		scheme = "https"
		if tlsArgs, tlsClient, err = etcdTLS(dir); err != nil {
			return StoreResult{}, err
		}
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
		client := fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[i])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[3+i])
		endpoints = append(endpoints, client)
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
		cmd.Args = append(cmd.Args, tlsArgs...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return StoreResult{}, err
		}
		procs = append(procs, cmd)
	}
	var hcs []*http.Client // one per writer, like Rivet's
	for range opts.Clients {
		hcs = append(hcs, &http.Client{Transport: &http.Transport{TLSClientConfig: tlsClient, ForceAttemptHTTP2: secure},
			Timeout: 20 * time.Second})
	}
	if err := waitEtcd(ctx, hcs[0], endpoints); err != nil {
		return StoreResult{}, err
	}
	value := base64.StdEncoding.EncodeToString(registrationBytes())
	write := func(ctx context.Context, i int) error {
		key := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "/machines/m-%016x", i))
		body, _ := json.Marshal(map[string]string{"key": key, "value": value})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoints[i%3]+"/v3/kv/put", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hcs[i/3%opts.Clients].Do(req)
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
	system := "etcd"
	if secure {
		system = "etcd-https"
	}
	return drive(ctx, system, 3, opts, write)
}

// etcdTLS writes a serving certificate for 127.0.0.1 under dir and returns etcd's flags
// and the client configuration that pins its CA, as Rivet's clients pin theirs.
func etcdTLS(dir string) ([]string, *tls.Config, error) {
	ca, err := pki.NewCA("rivet-bench-etcd", time.Now())
	if err != nil {
		return nil, nil, err
	}
	cert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Now())
	if err != nil {
		return nil, nil, err
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, err
	}
	fp, err := ca.Fingerprint()
	if err != nil {
		return nil, nil, err
	}
	client, err := shared.PinnedTLSConfig(fp)
	if err != nil {
		return nil, nil, err
	}
	return []string{"--cert-file", certFile, "--key-file", keyFile}, client, nil
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
