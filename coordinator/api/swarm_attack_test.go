package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

const adoptRole = `
name: swarm-host
selector: {labels: {pool: swarm}}
swarm: {role: auto}
`

// swarmSite is a real coordinator with four adopted hosts in three racks, planned: three
// managers (one designated to create the swarm) and a worker. Nothing plans on its own:
// the test runs the planning pass itself.
type swarmSite struct {
	f         *fixture
	dir       string // the coordinator's data dir
	tokens    map[shared.MachineID]string
	addrs     map[shared.MachineID]string
	initiator shared.MachineID
	attacker  shared.MachineID // a planned manager that is not the initiator
	victims   []shared.MachineID
}

func newSwarmSite(t *testing.T) *swarmSite {
	t.Helper()
	ctx := context.Background()
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dir := t.TempDir()
	c, err := coordinatortest.StartInProcess(ctx, dir, logger, coordinator.DaemonConfig{
		Plan: coordinator.PlanOptions{Settle: time.Hour, MaxWait: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	site := &swarmSite{f: &fixture{c: c, logs: logs}, dir: dir, tokens: map[shared.MachineID]string{}, addrs: map[shared.MachineID]string{}}
	roles, err := shared.ParseRoles([]byte(adoptRole))
	if err != nil {
		t.Fatal(err)
	}
	admin := c.Client(c.AdminToken)
	if _, err := admin.ApplyRoles(ctx, roles, false); err != nil {
		t.Fatal(err)
	}
	racks := []string{"r1", "r2", "r3", "r1"}
	var expected shared.ImportRequest
	for i, rack := range racks {
		expected.Machines = append(expected.Machines, coordinatortest.Expected(500+i, map[string]string{"pool": "swarm", "rack": rack}))
	}
	if _, err := admin.ImportExpected(ctx, &expected); err != nil {
		t.Fatal(err)
	}
	for i := range racks {
		req := coordinatortest.RegisterRequest(500 + i)
		req.Mode, req.Addr = shared.ModeService, fmt.Sprintf("10.9.0.%d", i+1)
		resp, err := c.Client(c.EnrolToken).Register(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		site.tokens[resp.Machine.ID], site.addrs[resp.Machine.ID] = resp.MachineToken, req.Addr
	}
	c.Server.PlanFleet(ctx, coordinator.PlanOptions{})
	for id := range site.tokens {
		m, err := admin.Machine(ctx, id)
		if err != nil || m.Plan == nil || m.State != shared.StateInstalled {
			t.Fatalf("%s not planned: %+v, %v", id, m, err)
		}
		sw := m.Plan.Steps[len(m.Plan.Steps)-1].Swarm
		switch {
		case sw.Init:
			site.initiator = id
		case sw.Role == shared.SwarmManager && site.attacker == "":
			site.attacker = id
		}
	}
	for id := range site.tokens {
		if id != site.attacker {
			site.victims = append(site.victims, id)
		}
	}
	slices.Sort(site.victims)
	if site.initiator == "" || site.attacker == "" {
		t.Fatalf("planning designated initiator %q; a second manager %q", site.initiator, site.attacker)
	}
	return site
}

func (s *swarmSite) client(id shared.MachineID) *shared.Client { return s.f.c.Client(s.tokens[id]) }

// running reports machine id's swarm step attempt running, as the agent does first.
func (s *swarmSite) running(t *testing.T, id shared.MachineID, attempt int) {
	t.Helper()
	m, err := s.f.c.Client(s.f.c.AdminToken).Machine(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	err = s.client(id).Report(context.Background(), id, &shared.StepReport{Generation: m.Plan.Generation, Step: "swarm",
		Status: shared.StepRunning, Attempt: attempt})
	if err != nil {
		t.Fatal(err)
	}
}

// victimsDigest hashes the victims' whole records as an operator reads them.
func (s *swarmSite) victimsDigest(t *testing.T) string {
	t.Helper()
	h := sha256.New()
	for _, id := range s.victims {
		m, err := s.f.c.Client(s.f.c.AdminToken).Machine(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewEncoder(h).Encode(m)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// refused sends a request as the attacker and checks that it is refused with want and
// that the replicated state, and so every victim's record, is unchanged.
func (s *swarmSite) refused(t *testing.T, what string, want int, method, path, token string, body []byte) string {
	t.Helper()
	before, victims := s.f.digest(t), s.victimsDigest(t)
	status, answer := s.f.raw(t, method, path, token, body)
	if status != want {
		t.Fatalf("%s: got %d %s, want %d", what, status, truncate(answer), want)
	}
	if s.f.digest(t) != before || s.victimsDigest(t) != victims {
		t.Fatalf("%s: refused, but the state changed", what)
	}
	return answer
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// heapInUse is this process's live heap after a collection (the coordinator runs in it).
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// TestSwarmAttackerWithAMachineToken is issue 13's attack on a real coordinator: the
// attacker holds the token of one machine (a planned manager, the worst case), races the
// designated manager for init, posts faked swarm reports and foreign manager addresses,
// and floods a registration with empty partitions. Every attempt is refused and the
// victims' records do not change.
func TestSwarmAttackerWithAMachineToken(t *testing.T) {
	site := newSwarmSite(t)
	ctx := context.Background()
	atk, atkToken := site.attacker, site.tokens[site.attacker]
	swarmPath := shared.MachinePath(shared.PathMachineSwarm, atk)
	site.running(t, atk, 1)

	// 1. The race for init on a fresh site: the attacker asks first, often, and then
	// together with the designated manager. It is never told to init.
	for range 5 {
		answer := site.refused(t, "attacker asks first for init", http.StatusConflict, "GET", swarmPath, atkToken, nil)
		if !strings.Contains(answer, shared.CodeSwarmPending) {
			t.Fatalf("attacker asking first: %s, want swarm pending", truncate(answer))
		}
	}
	site.running(t, site.initiator, 1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	inits := map[shared.MachineID]int{}
	for i := range 9 {
		id := atk
		if i == 4 {
			id = site.initiator
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if j, err := site.client(id).SwarmJoin(ctx, id); err == nil && j.Init {
				mu.Lock()
				inits[id]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if inits[atk] != 0 || inits[site.initiator] != 1 {
		t.Fatalf("told to init: %v; want only the designated %s", inits, site.initiator)
	}

	// 2. Faked reports: the attacker reports a swarm of its own, with its own tokens and
	// its own address, before and after the real one exists.
	fake := func(cluster string) []byte {
		return []byte(`{"node_id":"evil","cluster_id":"` + cluster + `","addr":"` + site.addrs[atk] +
			`:2377","manager_token":"SWMTKN-1-evil-m","worker_token":"SWMTKN-1-evil-w"}`)
	}
	site.refused(t, "attacker reports its own swarm", http.StatusForbidden, "PUT", swarmPath, atkToken, fake("evilcluster"))
	if _, err := site.client(site.initiator).SwarmReport(ctx, site.initiator, &shared.SwarmReport{NodeID: "n-init",
		ClusterID: "realcluster", Addr: site.addrs[site.initiator] + ":2377", ManagerToken: "SWMTKN-1-real-m",
		WorkerToken: "SWMTKN-1-real-w"}); err != nil {
		t.Fatal(err)
	}
	site.refused(t, "attacker reports tokens for the real swarm", http.StatusForbidden, "PUT", swarmPath, atkToken, fake("realcluster"))
	site.refused(t, "attacker reports a rotated manager token", http.StatusForbidden, "PUT", swarmPath, atkToken,
		[]byte(`{"node_id":"evil","cluster_id":"realcluster","manager_token":"SWMTKN-1-evil","rotated":true}`))
	site.refused(t, "attacker reports for a victim", http.StatusForbidden, "PUT",
		shared.MachinePath(shared.PathMachineSwarm, site.initiator), atkToken, []byte(`{"node_id":"evil"}`))

	// 3. Foreign manager addresses: a victim's, an outsider's, its own on another port.
	for _, addr := range []string{site.addrs[site.initiator] + ":2377", "192.0.2.66:2377"} {
		site.refused(t, "attacker reports manager address "+addr, http.StatusForbidden, "PUT", swarmPath, atkToken,
			[]byte(`{"node_id":"evil","cluster_id":"realcluster","addr":"`+addr+`"}`))
	}
	site.refused(t, "attacker reports its own address on port 2378", http.StatusBadRequest, "PUT", swarmPath, atkToken,
		[]byte(`{"node_id":"evil","cluster_id":"realcluster","addr":"`+site.addrs[atk]+`:2378"}`))

	// 4. Tokens: a victim's join answer is not the attacker's to read, and the attacker's
	// own manager token comes once per attempt.
	site.refused(t, "attacker reads a victim's join answer", http.StatusForbidden, "GET",
		shared.MachinePath(shared.PathMachineSwarm, site.initiator), atkToken, nil)
	first, err := site.client(atk).SwarmJoin(ctx, atk)
	if err != nil || first.Token != "SWMTKN-1-real-m" || first.Init {
		t.Fatalf("the attacker's own first fetch: %+v, %v", first, err)
	}
	if again, err := site.client(atk).SwarmJoin(ctx, atk); err != nil || again.Token != "" {
		t.Fatalf("a second fetch in the same attempt: token given %v, %v", again.Token != "", err)
	}

	// 5. The inventory flood: ~349,000 empty partitions in one 1 MiB registration.
	head, tail := `{"mode":"ram","version":"v","inventory":{"disks":[{"name":"sda","partitions":[{}`, `]}]}}`
	flood := []byte(head + strings.Repeat(",{}", (shared.MaxBody-len(head)-len(tail))/3) + tail)
	answer := site.refused(t, "the partition flood", http.StatusBadRequest, "POST", shared.PathRegister, site.f.c.EnrolToken, flood)
	if !strings.Contains(answer, fmt.Sprintf("over the limit of %d", shared.MaxPartitionsPerDisk)) {
		t.Fatalf("the flood's refusal does not name the limit: %s", truncate(answer))
	}
	// A machine token may register its own machine again; the flood is refused by the cap first.
	site.refused(t, "the partition flood with the machine token", http.StatusBadRequest, "POST", shared.PathRegister, atkToken, flood)
	// Issue 13 measured six of these taking the coordinator from 25 to 430 MB and raft.db
	// to 117 MB. Now: what six more leave behind.
	dbBefore, heapBefore := fileSize(t, filepath.Join(site.dir, "raft.db")), heapInUse()
	for range 6 {
		site.refused(t, "the partition flood again", http.StatusBadRequest, "POST", shared.PathRegister, site.f.c.EnrolToken, flood)
	}
	fmt.Printf("rivet-figure: partition flood x6 (%d bytes, ~%d partitions each) raft_db_growth_bytes=%d heap_inuse_growth_mb=%.1f\n",
		len(flood), len(flood)/3, fileSize(t, filepath.Join(site.dir, "raft.db"))-dbBefore, float64(heapInUse()-heapBefore)/(1<<20))

	sw := site.f.c.Server.Store().Swarm()
	if sw.InitBy != site.initiator || sw.ClusterID != "realcluster" || sw.ManagerToken != "SWMTKN-1-real-m" ||
		!slices.Equal(sw.ManagerAddrs, []string{site.addrs[site.initiator] + ":2377"}) {
		t.Fatalf("swarm record after the attack: init by %s, cluster %s, manager addrs %v", sw.InitBy, sw.ClusterID, sw.ManagerAddrs)
	}
	if strings.Contains(site.f.logs.String(), "SWMTKN-") {
		t.Fatal("a join token appears in the coordinator's log")
	}
}
