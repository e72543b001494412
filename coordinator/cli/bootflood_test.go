package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rivetmetal/rivet/coordinator/cli"
	"github.com/rivetmetal/rivet/coordinator/netboot/dhcp/dhcptest"
	"github.com/rivetmetal/rivet/coordinator/netboot/tftp"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// childArgs, when set in the environment (JSON), makes the test binary run `rivet` with
// those arguments instead of the tests: a coordinator process the test can put in a
// network namespace and measure on its own.
const childArgs = "RIVET_TEST_RUN_RIVET"

func TestMain(m *testing.M) {
	if args := os.Getenv(childArgs); args != "" {
		os.Exit(runRivet(args))
	}
	os.Exit(m.Run())
}

func runRivet(jsonArgs string) int {
	var args []string
	if err := json.Unmarshal([]byte(jsonArgs), &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := cli.Run(ctx, args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "rivet:", err)
		return 1
	}
	return 0
}

// floodCoordinator is a `rivet coordinator` process with full-mode boot services, in
// the server namespace of a pair; the test talks to it from the client namespace.
type floodCoordinator struct {
	pair    *dhcptest.Pair
	cmd     *exec.Cmd
	logs    *lineCounter
	metrics *http.Client
	api     string
	exited  chan struct{} // closed once the process has ended
}

// lineCounter keeps the coordinator's log: its lines are counted, the tail kept.
type lineCounter struct {
	mu    sync.Mutex
	lines int
	tail  []string
}

func (l *lineCounter) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.mu.Lock()
		l.lines++
		l.tail = append(l.tail, sc.Text())
		if len(l.tail) > 40 {
			l.tail = l.tail[1:]
		}
		l.mu.Unlock()
	}
}

func (l *lineCounter) snapshot() (int, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lines, strings.Join(l.tail, "\n")
}

func startFloodCoordinator(t *testing.T) *floodCoordinator {
	t.Helper()
	p := dhcptest.TestPair(t, "rvb", 51)
	data, boot := t.TempDir(), t.TempDir()
	for name, size := range map[string]int{"undionly.kpxe": 70000, "snponly.efi": 300000, "vmlinuz": 1 << 20, "initrd.zst": 1 << 20} {
		if err := os.WriteFile(filepath.Join(boot, name), bytes.Repeat([]byte{0x90}, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ip := p.ServerIP.String()
	args, _ := json.Marshal([]string{"coordinator", "--data-dir", data, "--advertise", ip,
		"--api-addr", ip + ":7443", "--raft-addr", ip + ":7400", "--gossip-addr", "off", "--memory-limit", "off",
		"--boot-interface", p.ServerIf, "--boot-mode", "full", "--boot-dir", boot,
		"--boot-pool-start", "10.77.51.100", "--boot-pool-end", "10.77.51.140", "--log-format", "json"})
	c := &floodCoordinator{pair: p, logs: &lineCounter{}, api: "https://" + ip + ":7443", exited: make(chan struct{})}
	c.cmd = dhcptest.Exec(p.ServerNS, os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childArgs+"="+string(args))
	// Pdeathsig fires when the forking thread ends, not the process: fork from this
	// goroutine's thread, locked until the test ends (after the cleanup stops the child).
	runtime.LockOSThread()
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.logs.read(stderr) // until the process ends; only then may Wait run
		c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Signal(syscall.SIGTERM)
		<-c.exited
		if t.Failed() {
			_, tail := c.logs.snapshot()
			t.Logf("coordinator log (last lines):\n%s", tail)
		}
	})
	c.metrics = c.scrapeClient(t, filepath.Join(data, "operator.env"))
	return c
}

// scrapeClient waits for operator.env and returns a client that checks the
// coordinator's certificate against its CA and dials from the client namespace.
func (c *floodCoordinator) scrapeClient(t *testing.T, envFile string) *http.Client {
	t.Helper()
	var fp string
	testenv.Eventually(t, 60*time.Second, "operator.env with the CA fingerprint", testenv.Holds(func() bool {
		creds, _ := shared.ReadOperatorCredentials(envFile)
		fp = creds.CAFingerprint
		return fp != "" && c.alive()
	}, nil))
	tlsConfig, err := shared.PinnedTLSConfig(fp)
	if err != nil {
		t.Fatal(err)
	}
	tr := shared.Transport(tlsConfig)
	tr.DialContext = func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
		err = dhcptest.Do(c.pair.ClientNS, func() error {
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (c *floodCoordinator) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// scrape returns /metrics and its number of series (lines that are not comments).
func (c *floodCoordinator) scrape(t *testing.T) (string, int) {
	t.Helper()
	resp, err := c.metrics.Get(c.api + shared.PathMetrics)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %s %v", resp.Status, err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			n++
		}
	}
	return string(b), n
}

// rssKB is the coordinator process's resident set (VmRSS).
func (c *floodCoordinator) rssKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("the coordinator is gone: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// fetchIPXE reads undionly.kpxe over TFTP from the client namespace until it arrives.
func (c *floodCoordinator) fetchIPXE(t *testing.T, wait time.Duration) {
	t.Helper()
	var got []byte
	var err error
	testenv.Eventually(t, wait, "a TFTP read of undionly.kpxe", testenv.Holds(func() bool {
		err = dhcptest.Do(c.pair.ClientNS, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			got, err = tftp.Fetch(ctx, net.JoinHostPort(c.pair.ServerIP.String(), "69"), "undionly.kpxe", tftp.FetchOptions{BlockSize: 1468})
			return err
		})
		if !c.alive() {
			t.Fatal("the coordinator process has died")
		}
		return err == nil && len(got) == 70000
	}, nil))
}

// maxBootSeriesAdded bounds the series the boot services may add to /metrics whatever
// clients send (the label sets of coordinator/metrics.go wireNetboot), plus the API's
// own series for the scrapes.
const maxBootSeriesAdded = 160

// TestBootFloodLeavesTheCoordinatorServing sends a running coordinator's boot services
// what an attacker on the boot network would: random datagrams to DHCP (67), proxyDHCP
// (4011) and TFTP (69), DISCOVERs from random MACs that exhaust the pool, TFTP names
// that are not UTF-8 and 15,000 distinct names from 100 addresses (first, so that the
// per-source limit lets a window's worth of them through to the handlers). Before the fix the
// first non-UTF-8 name panicked the process and every name was a series forever.
func TestBootFloodLeavesTheCoordinatorServing(t *testing.T) {
	c := startFloodCoordinator(t)
	c.fetchIPXE(t, 60*time.Second) // the boot services start once Raft has a leader
	var dc *dhcptest.Client
	if err := dhcptest.Do(c.pair.ClientNS, func() (err error) { dc, err = dhcptest.NewClient(c.pair.ClientIf, nil, 68); return err }); err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	known := dhcptest.MAC(1)
	discover := func(xid uint32) (offer *dhcpv4.DHCPv4) {
		testenv.Eventually(t, 20*time.Second, fmt.Sprintf("an OFFER to xid %d", xid), func() (err error) {
			if err := dc.Send(dhcptest.Request{XID: xid, MAC: known, Arch: 0, PXE: true}.Bytes(), dhcptest.Broadcast); err != nil {
				t.Fatal(err)
			}
			offer, _, err = dc.Receive(xid, 500*time.Millisecond)
			return err
		})
		return offer
	}
	before := discover(1)
	_, seriesBefore := c.scrape(t)
	rssBefore := c.rssKB(t)

	sources := addSources(t, c.pair, 100)
	start := time.Now()
	sent := flood(t, c, dc, sources)
	floodTime := time.Since(start)

	if !c.alive() {
		t.Fatal("the coordinator died in the flood")
	}
	c.fetchIPXE(t, 20*time.Second)
	if after := discover(2); !after.YourIPAddr.Equal(before.YourIPAddr) || after.BootFileName != "undionly.kpxe" {
		t.Fatalf("after the flood a known machine's DISCOVER got %s", after.Summary())
	}
	body, seriesAfter := c.scrape(t)
	rssAfter := c.rssKB(t)
	if seriesAfter-seriesBefore > maxBootSeriesAdded {
		t.Errorf("/metrics grew from %d to %d series in the flood; at most %d may be added", seriesBefore, seriesAfter, maxBootSeriesAdded)
	}
	if strings.Contains(body, "flood-") || strings.Contains(body, `\xff`) {
		t.Error("/metrics carries names the attacker chose")
	}
	handled := metricValue(body, `rivet_boot_tftp_transfers_total{file="other",result="error"}`)
	dropped := metricValue(body, `rivet_boot_dropped_total{reason="rate_limited",service="tftp"}`)
	if handled < 1000 || dropped == 0 {
		t.Errorf("TFTP: %v names handled, %v dropped by the per-source limit; want at least 1000 handled and some dropped", handled, dropped)
	}
	lines, _ := c.logs.snapshot()
	if lines > 400 {
		t.Errorf("the coordinator wrote %d log lines in the flood: client-caused lines are not throttled", lines)
	}
	t.Logf("rivet-figure: boot flood datagrams=%d seconds=%.1f rss_kb_before=%d rss_kb_after=%d series_before=%d series_after=%d metrics_bytes=%d tftp_names_handled=%.0f tftp_dropped=%.0f log_lines=%d",
		sent, floodTime.Seconds(), rssBefore, rssAfter, seriesBefore, seriesAfter, len(body), handled, dropped, lines)
}

// addSources puts n more addresses (10.77.51.150 on) on the client's veth.
func addSources(t *testing.T, p *dhcptest.Pair, n int) []net.IP {
	t.Helper()
	var batch strings.Builder
	var ips []net.IP
	for i := range n {
		ip := net.IPv4(10, 77, 51, byte(150+i)).To4()
		ips = append(ips, ip)
		fmt.Fprintf(&batch, "addr add %s/24 dev %s\n", ip, p.ClientIf)
	}
	cmd := exec.Command("ip", "-n", p.ClientNS, "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v: %s", err, out)
	}
	return ips
}

// flood sends the attack and returns how many datagrams it sent.
func flood(t *testing.T, c *floodCoordinator, dc *dhcptest.Client, sources []net.IP) int {
	t.Helper()
	rng := rand.New(rand.NewPCG(13, 13))
	server := c.pair.ServerIP
	conns := make([]*net.UDPConn, len(sources))
	if err := dhcptest.Do(c.pair.ClientNS, func() error {
		for i, ip := range sources {
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
			if err != nil {
				return err
			}
			conns[i] = conn
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	sent := 0
	send := func(conn *net.UDPConn, b []byte, port int) {
		if _, err := conn.WriteToUDP(b, &net.UDPAddr{IP: server, Port: port}); err != nil {
			t.Fatalf("send to port %d: %v", port, err)
		}
		sent++
	}
	random := func() []byte {
		b := make([]byte, rng.IntN(1500))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	for i := range 1000 { // names that are not UTF-8: the panic
		name := []byte{0xff, byte(rng.Uint32()) | 0x80, byte(i) | 0x80, byte(i>>8) | 0x80} // no NUL: one name each
		send(conns[i%len(conns)], append(append([]byte{0, 1}, name...), "\x00octet\x00"...), 69)
	}
	for i := range 15000 { // distinct names: a series each, before
		send(conns[i%len(conns)], fmt.Appendf(nil, "\x00\x01flood-%d\x00octet\x00", i), 69)
	}
	for i := range 5000 {
		conn := conns[i%len(conns)]
		send(conn, random(), 67)
		send(conn, random(), 4011)
		send(conn, random(), 69)
	}
	for i := range 2000 { // new MACs: the 41-address pool runs out (one warning, not 2000)
		mac := net.HardwareAddr{0x02, byte(i >> 8), byte(i), byte(rng.Uint32()), 1, 2}
		if err := dc.Send(dhcptest.Request{XID: uint32(1000 + i), MAC: mac, Arch: rng.IntN(12), PXE: true}.Bytes(), dhcptest.Broadcast); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	return sent
}

// metricValue is the value of the series whose line starts with name{labels}, or 0.
func metricValue(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
