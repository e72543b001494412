package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// The snapshot is encoded from a frozen copy outside the lock: it must be byte for byte
// the encoding of the live data, and writes racing with it must neither race (run with
// -race) nor leak into a snapshot taken before them.
func TestSnapshotFromFrozenCopy(t *testing.T) {
	s := New()
	now := time.Unix(1_700_000_000, 0).UTC()
	plan := func(id shared.MachineID) *shared.Plan {
		return &shared.Plan{MachineID: id, Role: "r", Generation: 2, Steps: []shared.Step{
			{Name: "disk", Kind: shared.StepDisk, Phase: shared.PhaseRAM, Disk: &shared.DiskStep{Target: shared.DiskTarget{Serial: "S"}}}}}
	}
	// Adopted hosts whose swarm step (attempt 1) runs: their swarm reports are taken.
	swarmPlan := func(id shared.MachineID, init bool) *shared.Plan {
		return &shared.Plan{MachineID: id, Role: "r", Generation: 2, Steps: []shared.Step{{Name: "swarm", Kind: shared.StepSwarm,
			Phase: shared.PhaseDisk, Swarm: &shared.SwarmStep{Role: shared.SwarmManager, Init: init}}}}
	}
	var ids, managers []shared.MachineID
	for i := range 50 {
		id := shared.MachineID(fmt.Sprintf("m-%016x", i))
		ids = append(ids, id)
		p := plan(id)
		if i < shared.MaxSwarmManagers {
			p = swarmPlan(id, i == 0)
			managers = append(managers, id)
		}
		s.ApplyRegister(Register{ID: id, Mode: shared.ModeRAM, Labels: map[string]string{"rack": "r1"},
			Addr: fmt.Sprintf("10.0.1.%d", i), Time: now}, uint64(2*i+1))
		s.ApplySetPlan(SetPlan{ID: id, Role: "r", Plan: p, Time: now}, uint64(2*i+2))
	}
	for i, id := range managers {
		s.ApplyReport(Report{ID: id, Time: now, Report: shared.StepReport{Generation: 2, Step: "swarm", Status: shared.StepRunning, Attempt: 1}}, uint64(150+i))
	}
	if res := out(s.ApplySwarmReport(SwarmReport{ID: ids[0], Report: shared.SwarmReport{NodeID: "n0", ClusterID: "c",
		Addr: "10.0.1.0:2377", ManagerToken: "m", WorkerToken: "w"}, Time: now, Rules: SwarmRules}, 200)); res.Err != nil {
		t.Fatal(res.Err)
	}

	snap := s.Snapshot()
	got := encode(t, snap)
	s.mu.RLock()
	want, _ := json.Marshal(&s.data)
	s.mu.RUnlock()
	if string(got) != string(want) || snap.Applied != 200 {
		t.Fatalf("snapshot differs from the live encoding (applied %d)", snap.Applied)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	reading, writing := make(chan struct{}), make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(writing)
		<-reading // write only while snapshots are being taken
		for i, id := range ids {
			idx := uint64(300 + i*5)
			// Swarm writes change the swarm record's maps in place, racing the encoding:
			// every iteration a manager starts a new attempt and fetches its token.
			mgr := managers[i%len(managers)]
			s.ApplyReport(Report{ID: mgr, Time: now, Report: shared.StepReport{Generation: 2, Step: "swarm", Status: shared.StepRunning, Attempt: i + 2}}, idx)
			s.ApplySwarmJoin(SwarmJoin{ID: mgr, Time: now}, idx+1)
			if i < len(managers) {
				s.ApplySwarmReport(SwarmReport{ID: id, Report: shared.SwarmReport{NodeID: "n", ClusterID: "c",
					Addr: fmt.Sprintf("10.0.1.%d:2377", i)}, Time: now, Rules: SwarmRules}, idx+2)
				continue
			}
			s.ApplyReport(Report{ID: id, Time: now, Report: shared.StepReport{Generation: 2, Step: "disk", Status: shared.StepRunning, Attempt: 1}}, idx+3)
			s.ApplyReport(Report{ID: id, Time: now, Report: shared.StepReport{Generation: 2, Step: "disk", Status: shared.StepSucceeded, Attempt: 1}}, idx+4)
		}
	}()
	// Snapshots (at least 20) until the writer, which starts after the first, is done.
	for n, done := 0, false; n < 20 || !done; n++ {
		if n == 1 {
			close(reading)
		}
		select {
		case <-writing:
			done = true
		default:
		}
		snap := s.Snapshot()
		b, idx := encode(t, snap), snap.Applied
		var d Data
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		// Every machine the snapshot shows past an index must agree with that index.
		for _, m := range d.Machines {
			if m.Steps[0].Status == shared.StepSucceeded && m.Steps[0].Name == "disk" && idx < 301 {
				t.Fatalf("snapshot at index %d shows a step finished at a later index", idx)
			}
		}
	}
	wg.Wait()
}

// The streamed encoding must be exactly json.Marshal's for every field and for the
// values encoding/json treats specially: HTML characters, non-ASCII, empty and nil maps.
func TestSnapshotEncodingEqualsJSONMarshal(t *testing.T) {
	now := time.Unix(1_700_000_000, 0).UTC()
	d := emptyData()
	d.Cluster = Cluster{CACertPEM: "<pem>&", GossipKey: "k", CreatedAt: now}
	d.Coordinators["c2"] = Coordinator{ID: "c2", RaftAddr: "10.0.0.2:7400"}
	d.Coordinators["c1"] = Coordinator{ID: "c1", RaftAddr: "10.0.0.1:7400"}
	d.Machines["m-b"] = &shared.Machine{ID: "m-b", Labels: map[string]string{"rack": "r<1>", "zone": "é"}}
	d.Machines["m-a"] = &shared.Machine{ID: "m-a", State: shared.StateReady}
	d.Events["m-a"] = []shared.Event{{Time: now, Message: "a & b"}}
	d.Roles["worker"] = &shared.Role{Name: "worker"}
	d.Tokens["t1"] = &Token{ID: "t1", Name: "alice\u2028", Role: "viewer"}
	d.TokenGens["m-a"] = 3
	d.Swarm.ManagerAddrs = []string{"10.0.0.9:2377"}
	d.Swarm.Managers = map[shared.MachineID]string{"m-b": "10.0.0.9:2377"}
	d.Swarm.Issued = map[shared.MachineID]TokenIssue{"m-b": {Generation: 2, Attempt: 1}}
	empty := Data{} // every map nil, and the protocol absent as the first release wrote it
	raised := emptyData()
	raised.Protocol = 2
	for name, data := range map[string]*Data{"full": &d, "nil maps": &empty, "raised protocol": &raised} {
		want, err := json.Marshal(data)
		if err != nil {
			t.Fatal(err)
		}
		got := encode(t, Snapshot{data: data})
		if string(got) != string(want) {
			t.Errorf("%s: streamed encoding differs from json.Marshal:\n got %s\nwant %s", name, got, want)
		}
	}
}

func encode(t *testing.T, snap Snapshot) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := snap.Encode(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
