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
	var ids []shared.MachineID
	for i := range 50 {
		id := shared.MachineID(fmt.Sprintf("m-%016x", i))
		ids = append(ids, id)
		s.ApplyRegister(Register{ID: id, Mode: shared.ModeRAM, Labels: map[string]string{"rack": "r1"}, Time: now}, uint64(2*i+1))
		s.ApplySetPlan(SetPlan{ID: id, Role: "r", Plan: plan(id), Time: now}, uint64(2*i+2))
	}
	s.ApplySwarmReport(SwarmReport{ID: ids[0], Report: shared.SwarmReport{NodeID: "n0", Addr: "10.0.0.9:2377"}, Time: now}, 200)

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
	go func() {
		defer wg.Done()
		for i, id := range ids {
			idx := uint64(300 + i*3)
			s.ApplyReport(Report{ID: id, Time: now, Report: shared.StepReport{Generation: 2, Step: "disk", Status: shared.StepRunning, Attempt: 1}}, idx)
			s.ApplyReport(Report{ID: id, Time: now, Report: shared.StepReport{Generation: 2, Step: "disk", Status: shared.StepSucceeded, Attempt: 1}}, idx+1)
			s.ApplySwarmReport(SwarmReport{ID: id, Report: shared.SwarmReport{NodeID: "n", Addr: fmt.Sprintf("10.0.1.%d:2377", 50-i)}, Time: now}, idx+2)
		}
	}()
	for range 20 {
		snap := s.Snapshot()
		b, idx := encode(t, snap), snap.Applied
		var d Data
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		// Every machine the snapshot shows past an index must agree with that index.
		for _, m := range d.Machines {
			if m.Steps[0].Status == shared.StepSucceeded && idx < 301 {
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
	empty := Data{} // every map nil
	for name, data := range map[string]*Data{"full": &d, "nil maps": &empty} {
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
