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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/pki"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// StoreOptions configures `rivet-bench store`.
type StoreOptions struct {
	RivetBin string // the rivet binary to run coordinators from
	Writes   int    // committed writes per system and round
	Rounds   int    // rounds; each measures every system once, in a rotating order
	Clients  int    // concurrent writers in the throughput run
	// LatencyClients writers measure commit latency under light load, where queueing
	// behind other writers does not hide the commit path itself.
	LatencyClients int
	Dir            string // scratch directory (removed after)
	// ProfileDir, when set, receives a CPU profile of each node of the 3-node Rivet
	// cluster taken during its first throughput run (rivet3-<node>.pprof), for `go tool pprof`.
	ProfileDir string
}

// StoreResult is one system's figures: medians over the rounds for throughput, and
// latency percentiles over every round's light-load writes.
type StoreResult struct {
	System       string
	Nodes        int
	Writes       int // in all rounds
	Failed       int
	WritesPerSec float64       // throughput run
	Rounds       []float64     // writes/s of each round's throughput run
	P50, P99     time.Duration // latency runs
	LoadP99      time.Duration // p99 in the throughput runs, queueing included
	// ServerCPU and ClientCPU are the CPU time per committed write in the throughput
	// runs (medians over the rounds): all of the system's processes together, and this
	// bench's writers. On a CPU-bound box they explain the throughput, and they swing
	// far less than it does when other work shares the machine.
	ServerCPU, ClientCPU time.Duration
}

// storeSystem is a running cluster under test and how to write to it.
type storeSystem struct {
	name  string
	nodes int
	write func(ctx context.Context, i int) error
	stop  func()
	pids  func() []int // the system's processes, for their CPU time
	// profile, when set, starts a CPU profile of every node; the func it returns waits.
	profile func() func() error
}

// Store measures committed writes/s and commit latency for Rivet with 1 and 3
// coordinators and for a 3-member etcd, on the same workload: Writes writes of one
// registration-sized record (~1 KB) from Clients concurrent writers, round-robin over
// the members, each writer with its own connection to each member (as machines have).
// Rivet's writes are real machine registrations through its HTTPS API (TLS, JSON decode,
// validation, Raft commit with fsync); etcd's are puts of the same bytes through its JSON
// gateway, once over HTTPS with Rivet's own client transport and TLS setup (the same
// workload, the ratio that counts) and once over plain HTTP (etcd's default).
//
// All four clusters run for the whole bench and are measured in rounds, each system once
// a round in a rotating order, so that the machine's slow swings in speed fall on all of
// them alike; the ratio is the median of the rounds' ratios.
func Store(ctx context.Context, w io.Writer, opts StoreOptions) ([]StoreResult, error) {
	opts.fill()
	if _, err := exec.LookPath("etcd"); err != nil {
		return nil, errors.New("etcd not found: install Debian's etcd-server (bash .ci/install-debs)")
	}
	dir, err := os.MkdirTemp(opts.Dir, "rivet-bench-store-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(w, "bench store: %d rounds of %d writes of a ~1 KB record, round-robin over members; throughput "+
		"with %d concurrent clients, latency with %d\n", opts.Rounds, opts.Writes, opts.Clients, opts.LatencyClients)
	systems, err := startStoreSystems(ctx, opts, dir)
	for _, sys := range systems {
		defer sys.stop()
	}
	if err != nil {
		return nil, err
	}
	results := make([]StoreResult, len(systems))
	light := make([][]time.Duration, len(systems))
	serverCPU, clientCPU := make([][]float64, len(systems)), make([][]float64, len(systems))
	for i, sys := range systems {
		results[i] = StoreResult{System: sys.name, Nodes: sys.nodes}
		if err := warmUp(ctx, sys, opts.Clients); err != nil {
			return nil, fmt.Errorf("%s: %w", sys.name, err)
		}
	}
	for round := range opts.Rounds {
		for k := range systems {
			i := (k + round) % len(systems)
			sys, r := systems[i], &results[i]
			var profiled func() error
			if round == 0 && sys.profile != nil {
				profiled = sys.profile()
			}
			offset := (round + 1) * 10_000_000
			server0, client0 := sys.cpuSeconds(), selfCPUSeconds()
			load := run(ctx, opts.Writes, opts.Clients, offset, sys.write)
			perWrite := func(cpu float64) float64 { return cpu / float64(max(1, opts.Writes-load.failed)) }
			serverCPU[i] = append(serverCPU[i], perWrite(sys.cpuSeconds()-server0))
			clientCPU[i] = append(clientCPU[i], perWrite(selfCPUSeconds()-client0))
			if profiled != nil {
				if err := profiled(); err != nil {
					return nil, err
				}
			}
			lat := run(ctx, opts.Writes/4, opts.LatencyClients, offset+5_000_000, sys.write)
			r.Writes += opts.Writes + opts.Writes/4
			r.Failed += load.failed + lat.failed
			r.Rounds = append(r.Rounds, load.perSec)
			r.LoadP99 = max(r.LoadP99, load.p99)
			light[i] = append(light[i], lat.latencies...)
		}
		fmt.Fprintf(w, "bench store: round %d: rivet3/etcd-https %.2fx\n", round+1, results[1].Rounds[round]/results[2].Rounds[round])
	}
	for i := range results {
		r := &results[i]
		r.WritesPerSec = median(r.Rounds)
		r.P50, r.P99 = percentile(light[i], 50), percentile(light[i], 99)
		r.ServerCPU, r.ClientCPU = fromSeconds(median(serverCPU[i])), fromSeconds(median(clientCPU[i]))
		printStore(w, *r)
	}
	rivet3, etcdTLS, etcdPlain := results[1], results[2], results[3]
	var vsTLS, vsPlain []float64
	for round := range opts.Rounds {
		vsTLS = append(vsTLS, rivet3.Rounds[round]/etcdTLS.Rounds[round])
		vsPlain = append(vsPlain, rivet3.Rounds[round]/etcdPlain.Rounds[round])
	}
	fmt.Fprintf(w, "rivet-figure: store ratio rivet3_vs_etcd3 throughput=%.2fx (median of %d rounds: %s; etcd over HTTPS, "+
		"the same workload; %.2fx vs etcd over plain HTTP) server_cpu_per_write=%.2fx of etcd's p99_rivet3_ms=%.1f "+
		"(goal >=1.0x, p99 < 20 ms)\n",
		median(vsTLS), opts.Rounds, ratios(vsTLS), median(vsPlain), float64(rivet3.ServerCPU)/float64(etcdTLS.ServerCPU), ms(rivet3.P99))
	return results, nil
}

func (o *StoreOptions) fill() {
	if o.Writes == 0 {
		o.Writes = 5000
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.Clients == 0 {
		o.Clients = 64
	}
	if o.LatencyClients == 0 {
		o.LatencyClients = 4
	}
}

// startStoreSystems starts, in the order results are reported: Rivet with 1 and with 3
// coordinators, etcd over HTTPS and etcd over plain HTTP. On error, the systems started
// so far are returned so the caller can stop them.
func startStoreSystems(ctx context.Context, opts StoreOptions, dir string) ([]*storeSystem, error) {
	var systems []*storeSystem
	for _, nodes := range []int{1, 3} {
		sys, err := startRivet(ctx, opts, filepath.Join(dir, fmt.Sprintf("rivet%d", nodes)), nodes)
		if err != nil {
			return systems, fmt.Errorf("rivet %d nodes: %w", nodes, err)
		}
		systems = append(systems, sys)
	}
	for _, secure := range []bool{true, false} {
		sys, err := startEtcd(ctx, opts, filepath.Join(dir, fmt.Sprintf("etcd-tls-%v", secure)), secure)
		if err != nil {
			return systems, fmt.Errorf("etcd: %w", err)
		}
		systems = append(systems, sys)
	}
	return systems, nil
}

// warmUp opens every connection and warms the leader's caches; not measured.
func warmUp(ctx context.Context, sys *storeSystem, clients int) error {
	for i := range clients * sys.nodes {
		if err := sys.write(ctx, 1_000_000+i); err != nil {
			return fmt.Errorf("warm-up write: %w", err)
		}
	}
	return nil
}

func printStore(w io.Writer, r StoreResult) {
	fmt.Fprintf(w, "rivet-figure: store system=%s nodes=%d writes=%d failed=%d writes_per_s=%.0f (rounds %s) "+
		"commit_p50_ms=%.2f commit_p99_ms=%.2f loaded_p99_ms=%.1f server_cpu_ms_per_write=%.3f client_cpu_ms_per_write=%.3f\n",
		r.System, r.Nodes, r.Writes, r.Failed, r.WritesPerSec, ratiosFmt(r.Rounds, "%.0f"), ms(r.P50), ms(r.P99), ms(r.LoadP99),
		ms(r.ServerCPU), ms(r.ClientCPU))
}

// cpuSeconds is the CPU time the system's processes have used so far.
func (sys *storeSystem) cpuSeconds() float64 {
	var total float64
	for _, pid := range sys.pids() {
		cpu, _ := procCPUSeconds(pid)
		total += cpu
	}
	return total
}

func fromSeconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func ratios(xs []float64) string { return ratiosFmt(xs, "%.2fx") }

func ratiosFmt(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " ")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func percentile(lat []time.Duration, p int) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func startRivet(ctx context.Context, opts StoreOptions, dir string, nodes int) (*storeSystem, error) {
	profile := opts.ProfileDir != "" && nodes == 3
	// The bench measures the store: all its writers share one enrolment token, which the
	// per-token registration limit exists to slow down.
	args := []string{"--log-level", "warn", "--register-rate", "0"}
	if profile {
		args = append(args, "--debug-pprof")
	}
	cluster, err := coordinatortest.Start(ctx, coordinatortest.Options{Bin: opts.RivetBin, Dir: dir, Nodes: nodes, ExtraArgs: args})
	if err != nil {
		return nil, err
	}
	// One client (one connection) per writer and node, as every machine has its own.
	clients := make([][]*shared.Client, nodes)
	for i, n := range cluster.Nodes {
		for range opts.Clients {
			clients[i] = append(clients[i], cluster.Client(n).WithToken(cluster.EnrolToken))
		}
	}
	pids := func() []int {
		var out []int
		for _, n := range cluster.Nodes {
			out = append(out, n.PID())
		}
		return out
	}
	sys := &storeSystem{name: "rivet", nodes: nodes, stop: cluster.Stop, pids: pids,
		write: func(ctx context.Context, i int) error {
			_, err := clients[i%nodes][i/nodes%opts.Clients].Register(ctx, coordinatortest.RegisterRequest(i))
			return err
		}}
	if profile {
		sys.profile = func() func() error { return profileNodes(ctx, cluster, opts.ProfileDir) }
	}
	return sys, nil
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

type runResult struct {
	failed    int
	perSec    float64
	p99       time.Duration
	latencies []time.Duration
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
	return runResult{failed: failed, perSec: float64(n-failed) / elapsed.Seconds(), p99: percentile(lat, 99), latencies: lat}
}

// startEtcd runs a 3-member etcd (Debian's etcd-server) on loopback.
// With secure, clients speak HTTPS to etcd exactly as they do to Rivet (a certificate
// from a CA made like Rivet's, the same pinned TLS configuration and shared.Transport):
// the same workload. Without, plain HTTP, etcd's default. Peers talk plain TCP in both, as
// Rivet's Raft transport does.
func startEtcd(ctx context.Context, opts StoreOptions, dir string, secure bool) (sys *storeSystem, err error) {
	ports, err := coordinatortest.FreePorts("127.0.0.1", 6)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	scheme, tlsArgs, tlsClient := "http", []string(nil), (*tls.Config)(nil)
	if secure {
		scheme = "https"
		if tlsArgs, tlsClient, err = etcdTLS(dir); err != nil {
			return nil, err
		}
	}
	var peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("e%d=http://127.0.0.1:%d", i+1, ports[3+i]))
	}
	var procs []*exec.Cmd
	var exits []<-chan error
	var logs []*os.File
	stop := func() {
		for i, p := range procs {
			_ = p.Process.Kill()
			<-exits[i]
		}
		for _, f := range logs {
			f.Close()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	var endpoints []string
	for i := range 3 {
		client := fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[i])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[3+i])
		endpoints = append(endpoints, client)
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("e%d.log", i+1)))
		if err != nil {
			return nil, err
		}
		logs = append(logs, logf)
		cmd := exec.CommandContext(ctx, "etcd", "--name", fmt.Sprintf("e%d", i+1),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("e%d", i+1)),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "rivet-bench", "--log-level", "error")
		cmd.Args = append(cmd.Args, tlsArgs...)
		cmd.Stdout, cmd.Stderr = logf, logf
		exited, err := testenv.StartTied(cmd, syscall.SIGKILL)
		if err != nil {
			return nil, err
		}
		procs, exits = append(procs, cmd), append(exits, exited)
	}
	var hcs []*http.Client // one per writer, with the transport of Rivet's own client
	for range opts.Clients {
		hcs = append(hcs, &http.Client{Transport: shared.Transport(tlsClient), Timeout: 20 * time.Second})
	}
	if err := waitEtcd(ctx, hcs[0], endpoints); err != nil {
		return nil, err
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
	name := "etcd"
	if secure {
		name = "etcd-https"
	}
	pids := func() []int {
		var out []int
		for _, p := range procs {
			out = append(out, p.Process.Pid)
		}
		return out
	}
	return &storeSystem{name: name, nodes: 3, write: write, stop: stop, pids: pids}, nil
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
	return testenv.Poll(ctx, 30*time.Second, "every etcd member healthy", func() error {
		for _, e := range endpoints {
			resp, err := hc.Get(e + "/health")
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(b), `"true"`) {
				return fmt.Errorf("%s: %s", e, bytes.TrimSpace(b))
			}
		}
		return nil
	})
}
