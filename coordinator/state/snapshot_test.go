package state

import (
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

	got, applied, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	want, _ := json.Marshal(&s.data)
	s.mu.RUnlock()
	if string(got) != string(want) || applied != 200 {
		t.Fatalf("snapshot differs from the live encoding (applied %d)", applied)
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
		b, idx, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
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
