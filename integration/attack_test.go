package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/integration/swarmlab"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

const attackRole = `
name: swarm-host
description: hosts that already run dockerd; Rivet forms the Swarm
selector: {labels: {pool: swarm}}
swarm: {role: auto}
`

// TestAttackerOnTheBootNetwork is issue 13's proof. Three coordinators, each in its own
// namespace with boot services (proxyDHCP, TFTP, HTTP boot) on one bridge, admit three
// real service-mode agents beside real dockerds from the operator's import; they form a
// 3-manager Swarm. Then an attacker process in a namespace of its own on the same bridge
// (integration/attacker) tries every attack it knows. Each must be sent, answered and
// refused; every victim's record and the Swarm's membership must be unchanged; each
// identity claim must show as a conflict on the victim's timeline and in the metrics;
// and no secret may be found in the coordinators' logs, Raft logs or snapshots.
func TestAttackerOnTheBootNetwork(t *testing.T) {
	testenvLong(t)
	lab := swarmlab.Up(t, 3, swarmlab.Config{Subnet: "10.232.90.0/24", Hosts: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bootDir := attackBootDir(t, dir)
	cluster := startCluster(ctx, t, coordinatortest.Options{Dir: filepath.Join(dir, "coord"),
		Nodes: 3, Admit: shared.AdmitExpected,
		Place: func(i int) (string, string) { return lab.Hosts[i].NetNS, lab.Hosts[i].IP.String() },
		ExtraArgs: []string{"--plan-settle", "2s", "--boot-mode", "proxy", "--boot-interface", "eth0",
			"--boot-dir", bootDir, "--boot-http-addr", ":8080"}})
	admin := cluster.Client()
	applyRoles(ctx, t, admin, attackRole)

	victims := formVictimSwarm(t, ctx, lab, cluster, dir)
	// Ready is not the end of every write (a check-in that brings news, gossip): the
	// baseline is taken once the records have not changed for longer than the agents'
	// poll interval (2 s).
	var last map[shared.MachineID]string
	var since time.Time
	var before map[shared.MachineID]string
	testenv.Eventually(t, time.Minute, "the victims' records settled", func() error {
		now := victimDigests(t, ctx, cluster, victims)
		if last == nil || !equalMaps(now, last) {
			last, since = now, time.Now()
		}
		if time.Since(since) < 5*time.Second {
			return errors.New("changed less than 5 s ago")
		}
		before = now
		return nil
	})
	swarmBefore := swarmMembers(t, ctx, lab)
	cookie, csrf := loggedOutSession(t, cluster)

	target := attackTarget(t, lab, cluster, victims, cookie, csrf)
	results := runAttacker(t, ctx, lab.Hosts[3].NetNS, target, dir)

	// Every attack was sent and answered, and none succeeded.
	if len(results) < 3*(1+len(victims))+len(victims)+3+3+3*len(victims)+3 {
		t.Errorf("the attacker reported %d attacks; it did not get through its list", len(results))
	}
	for _, r := range results {
		t.Logf("attack %-70s sent=%v succeeded=%v: %s", r.Attack, r.Sent, r.Succeeded, r.Answer)
		switch {
		case r.Succeeded:
			t.Errorf("ATTACK SUCCEEDED: %s: %s", r.Attack, r.Answer)
		case !r.Sent || r.Answer == "":
			t.Errorf("attack %q was not sent or not answered: the test would prove nothing", r.Attack)
		}
	}

	// Nothing about a victim or the Swarm changed.
	if after := victimDigests(t, ctx, cluster, victims); !equalMaps(before, after) {
		t.Errorf("a victim's record changed:\nbefore %v\nafter  %v", before, after)
		for _, v := range victims {
			m, _ := cluster.Client().Machine(ctx, v.ID)
			b, _ := json.MarshalIndent(m, "", " ")
			t.Logf("victim %s now: %s", v.ID, tail(string(b), 3000))
		}
	}
	if after := swarmMembers(t, ctx, lab); after != swarmBefore {
		t.Errorf("the Swarm's membership changed:\nbefore %s\nafter  %s", swarmBefore, after)
	}
	for _, v := range victims {
		evs, err := admin.Events(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		conflicts := 0
		for _, e := range evs {
			if e.Kind == shared.EventConflict && strings.Contains(e.Message, lab.Hosts[3].IP.String()) {
				conflicts++
			}
		}
		if conflicts < 1 {
			t.Errorf("victim %s shows no identity conflict from the attacker's address, want its id's claim", v.ID)
		}
	}
	if n := metricValue(t, cluster, "rivet_identity_conflicts_total"); n < float64(len(victims)) {
		t.Errorf("rivet_identity_conflicts_total is %v across the coordinators, want at least %d", n, len(victims))
	}
	tokens, err := admin.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		if tok.Name == "evil" {
			t.Errorf("the attacker's token is in the store: %+v", tok)
		}
	}
	noSecretAtRest(t, ctx, lab, cluster, victims)
}

// attackBootDir holds what TFTP and boot HTTP serve; the attack needs only the scripts.
func attackBootDir(t *testing.T, dir string) string {
	boot := filepath.Join(dir, "boot")
	if err := os.MkdirAll(boot, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"undionly.kpxe", "snponly.efi"} {
		data, err := os.ReadFile("/usr/lib/ipxe/" + f)
		if err != nil {
			t.Fatalf("iPXE binaries (Debian's ipxe): %v", err)
		}
		diskWrite(t, filepath.Join(boot, f), data)
	}
	diskWrite(t, filepath.Join(boot, "vmlinuz"), []byte("not a kernel"))
	diskWrite(t, filepath.Join(boot, "initrd.zst"), []byte("not an initramfs"))
	return boot
}

type victim struct {
	ID       shared.MachineID
	UUID     string
	MAC      string
	Recorded bool // the record holds the MAC (a hardware NIC): it can be stolen
	StateDir string
}

// formVictimSwarm imports the victims by MAC, starts an agent beside each dockerd and
// waits until all three are ready in one Swarm.
func formVictimSwarm(t *testing.T, ctx context.Context, lab *swarmlab.Lab, cluster *coordinatortest.Cluster, dir string) []victim {
	t.Helper()
	admin := cluster.Client()
	var expected shared.ImportRequest
	victims := make([]victim, len(lab.Nodes))
	for i, n := range lab.Nodes {
		mac, err := n.MAC()
		if err != nil {
			t.Fatal(err)
		}
		victims[i] = victim{UUID: fmt.Sprintf("5a4b0000-0000-4000-8000-%012d", i), MAC: mac,
			StateDir: filepath.Join(dir, fmt.Sprintf("victim%d", i))}
		// By system UUID: a host's veth is no hardware, so its record holds no MAC.
		expected.Machines = append(expected.Machines, shared.ExpectedMachine{UUID: victims[i].UUID,
			Hostname: fmt.Sprintf("victim%d", i), Labels: map[string]string{"pool": "swarm", "rack": fmt.Sprintf("r%d", i+1)}})
	}
	if _, err := admin.ImportExpected(ctx, &expected); err != nil {
		t.Fatal(err)
	}
	for i, n := range lab.Nodes {
		v := victims[i]
		if err := os.MkdirAll(v.StateDir, 0o700); err != nil {
			t.Fatal(err)
		}
		_ = os.WriteFile(filepath.Join(v.StateDir, "none.yaml"), nil, 0o600)
		logPath := filepath.Join(dir, fmt.Sprintf("victim%d.log", i))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := n.Command(ctx, bin("rivet-agent"), "run", "--mode", "service", "--config", filepath.Join(v.StateDir, "none.yaml"),
			"--server", strings.Join(cluster.URLs(), ","), "--ca-fingerprint", cluster.Fingerprint, "--token", cluster.EnrolToken,
			"--state-dir", v.StateDir, "--system-uuid", v.UUID, "--gossip-bind", n.IP.String()+":7946",
			"--docker-host", n.DockerHost(), "--metrics-addr", "off", "--poll-interval", "2s", "--log-format", "json")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		exited, err := testenv.StartTied(cmd, syscall.SIGKILL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
			logf.Close()
			if t.Failed() {
				data, _ := os.ReadFile(logPath)
				t.Logf("victim %d log (tail):\n%s", i, tail(string(data), 2000))
			}
		})
	}
	var byMAC map[string]shared.MachineID
	testenv.Eventually(t, 4*time.Minute, "three victims ready in the Swarm", func() error {
		ms, err := admin.Machines(ctx)
		if err != nil {
			return err
		}
		out := map[string]shared.MachineID{}
		for _, s := range ms {
			if s.State != shared.StateReady {
				continue
			}
			m, err := admin.Machine(ctx, s.ID)
			if err != nil {
				return err
			}
			if m.Inventory != nil {
				out[m.Inventory.System.UUID] = m.ID
			}
		}
		if len(out) < len(victims) {
			return fmt.Errorf("%d of %d ready", len(out), len(victims))
		}
		byMAC = out
		return nil
	})
	for i := range victims {
		victims[i].ID = byMAC[victims[i].UUID]
	}
	return victims
}

// victimDigests hashes every victim's whole record (the timeline is apart: a conflict
// event is expected there).
func victimDigests(t *testing.T, ctx context.Context, cluster *coordinatortest.Cluster, victims []victim) map[shared.MachineID]string {
	t.Helper()
	out := map[shared.MachineID]string{}
	for _, v := range victims {
		m, err := cluster.Client().Machine(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(m)
		sum := sha256.Sum256(b)
		out[v.ID] = hex.EncodeToString(sum[:8])
	}
	return out
}

// swarmMembers is the Swarm as its first manager's dockerd sees it: node ids, roles,
// availability and addresses, sorted.
func swarmMembers(t *testing.T, ctx context.Context, lab *swarmlab.Lab) string {
	t.Helper()
	nodes, err := lab.Nodes[0].Client(t).NodeList(ctx, swarm.NodeListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, n := range nodes {
		rows = append(rows, fmt.Sprintf("%s %s %s %s", n.ID, n.Spec.Role, n.Spec.Availability, n.Status.Addr))
	}
	sort.Strings(rows)
	if len(rows) != len(lab.Nodes) {
		t.Fatalf("the Swarm has %d nodes, want %d: %v", len(rows), len(lab.Nodes), rows)
	}
	return strings.Join(rows, "; ")
}

var attackCSRF = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// loggedOutSession logs an admin into the status pages, reads the form token of a page,
// logs out and returns the cookie and token as an eavesdropper kept them.
func loggedOutSession(t *testing.T, cluster *coordinatortest.Cluster) (cookie, csrf string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := *cluster.Client().HTTPClient()
	hc.Jar = jar
	base := cluster.Nodes[0].URL()
	post := func(path string, form url.Values) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", base)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post("/status/login", url.Values{"token": {cluster.AdminToken}})
	resp.Body.Close()
	u, _ := url.Parse(base + "/status/")
	for _, c := range jar.Cookies(u) {
		cookie = c.Name + "=" + c.Value
	}
	page, err := hc.Get(base + "/status/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	m := attackCSRF.FindSubmatch(body)
	if cookie == "" || m == nil {
		t.Fatalf("could not log in to the status pages (cookie %v, form token %v)", cookie != "", m != nil)
	}
	csrf = string(m[1])
	resp = post("/status/logout", url.Values{"csrf": {csrf}})
	resp.Body.Close()
	return cookie, csrf
}

// attackerResult mirrors the attacker's JSON lines.
type attackerResult struct {
	Attack    string `json:"attack"`
	Sent      bool   `json:"sent"`
	Answer    string `json:"answer"`
	Succeeded bool   `json:"succeeded"`
}

func attackTarget(t *testing.T, lab *swarmlab.Lab, cluster *coordinatortest.Cluster, victims []victim, cookie, csrf string) []byte {
	t.Helper()
	type coord struct {
		API      string `json:"api"`
		Raft     string `json:"raft"`
		BootHTTP string `json:"boot_http"`
	}
	type vict struct {
		ID       shared.MachineID `json:"id"`
		UUID     string           `json:"uuid"`
		MAC      string           `json:"mac"`
		Recorded bool             `json:"recorded"`
	}
	tg := struct {
		Coordinators  []coord `json:"coordinators"`
		CAFingerprint string  `json:"ca_fingerprint"`
		Iface         string  `json:"iface"`
		Victims       []vict  `json:"victims"`
		Cookie        string  `json:"cookie"`
		CSRF          string  `json:"csrf"`
	}{CAFingerprint: cluster.Fingerprint, Iface: "eth0", Cookie: cookie, CSRF: csrf}
	for i, n := range cluster.Nodes {
		tg.Coordinators = append(tg.Coordinators, coord{API: n.URL(), Raft: n.RaftAddr,
			BootHTTP: "http://" + lab.Hosts[i].IP.String() + ":8080"})
	}
	for _, v := range victims {
		tg.Victims = append(tg.Victims, vict{ID: v.ID, UUID: v.UUID, MAC: v.MAC, Recorded: v.Recorded})
	}
	b, _ := json.Marshal(tg)
	return b
}

// runAttacker builds the attacker and runs it in its namespace.
func runAttacker(t *testing.T, ctx context.Context, netns string, target []byte, dir string) []attackerResult {
	t.Helper()
	exe := filepath.Join(dir, "attacker")
	build := exec.CommandContext(ctx, "go", "build", "-o", exe, "./integration/attacker")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the attacker: %v\n%s", err, out)
	}
	targetFile := filepath.Join(dir, "target.json")
	if err := os.WriteFile(targetFile, target, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", netns, exe, "-target", targetFile)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	exited, err := testenv.StartTied(cmd, syscall.SIGKILL)
	if err == nil {
		err = <-exited
	}
	out := stdout.Bytes()
	if err != nil {
		t.Fatalf("the attacker failed: %v\n%s", err, stderr.String())
	}
	var results []attackerResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r attackerResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("attacker output %q: %v", sc.Text(), err)
		}
		results = append(results, r)
	}
	return results
}

// metricValue sums a counter over every coordinator's /metrics.
func metricValue(t *testing.T, cluster *coordinatortest.Cluster, name string) float64 {
	t.Helper()
	var sum float64
	for _, n := range cluster.Nodes {
		text, err := cluster.Client(n).Metrics(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		v, _ := shared.MetricSample(text, name)
		sum += v
	}
	return sum
}

// noSecretAtRest greps the coordinators' logs, Raft logs and snapshots for every secret
// the test can name: the operator tokens, the victims' machine tokens, the gossip key and
// the Swarm join tokens.
func noSecretAtRest(t *testing.T, ctx context.Context, lab *swarmlab.Lab, cluster *coordinatortest.Cluster, victims []victim) {
	t.Helper()
	secrets := map[string]string{"admin token": cluster.AdminToken, "enrol token": cluster.EnrolToken}
	for i, v := range victims {
		data, err := os.ReadFile(filepath.Join(v.StateDir, "machine.json"))
		if err != nil {
			t.Fatalf("victim %d's kept token: %v", i, err)
		}
		var kept struct {
			Token string `json:"machine_token"`
		}
		_ = json.Unmarshal(data, &kept)
		secrets[fmt.Sprintf("victim %d machine token", i)] = kept.Token
	}
	g, err := cluster.Client().Gossip(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secrets["gossip key"] = g.Key
	sw, err := lab.Nodes[0].Client(t).SwarmInspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secrets["swarm manager token"], secrets["swarm worker token"] = sw.JoinTokens.Manager, sw.JoinTokens.Worker
	for _, n := range cluster.Nodes {
		if _, err := cluster.Client(n).Snapshot(ctx); err != nil {
			t.Fatalf("snapshot on %s: %v", n.ID, err)
		}
	}
	haystacks := map[string][]byte{"coordinator logs": []byte(cluster.Logs())}
	for _, n := range cluster.Nodes {
		_ = filepath.Walk(n.DataDir, func(path string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() && (info.Name() == "raft.db" || info.Name() == "state.bin") {
				data, _ := os.ReadFile(path)
				haystacks[path] = data
			}
			return nil
		})
	}
	searched := 0
	for where, data := range haystacks {
		if len(data) == 0 {
			continue
		}
		searched++
		for name, secret := range secrets {
			if secret == "" {
				t.Fatalf("the %s is empty: the grep would prove nothing", name)
			}
			if bytes.Contains(data, []byte(secret)) {
				t.Errorf("the %s is in clear in %s", name, where)
			}
		}
	}
	if searched < 1+2*len(cluster.Nodes) {
		t.Errorf("searched %d files, want the logs, a raft.db and a snapshot per coordinator", searched)
	}
}

func equalMaps(a, b map[shared.MachineID]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
