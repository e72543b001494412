package state

import (
	"testing"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// A progress report that arrives after its step's result (a follower forwarded it late)
// must not turn the finished step back into a running one; a new attempt still may.
func TestLateProgressDoesNotReopenAFinishedStep(t *testing.T) {
	s := New()
	now := time.Unix(1_700_000_000, 0).UTC()
	id := shared.MachineID("m-0123456789abcdef")
	s.ApplyRegister(Register{ID: id, Mode: shared.ModeRAM, Time: now}, 1)
	plan := &shared.Plan{MachineID: id, Role: "r", Generation: 2, Steps: []shared.Step{
		{Name: "disk", Kind: shared.StepDisk, Phase: shared.PhaseRAM, Disk: &shared.DiskStep{Target: shared.DiskTarget{Serial: "S1"}}},
		{Name: "image", Kind: shared.StepImage, Phase: shared.PhaseRAM, Image: &shared.ImageStep{Target: shared.DiskTarget{Serial: "S1"}}},
	}}
	if res := out(s.ApplySetPlan(SetPlan{ID: id, Role: "r", Plan: plan, Time: now}, 2)); res.Err != nil {
		t.Fatal(res.Err)
	}
	report := func(index uint64, status shared.StepStatus, attempt int, progress *shared.Progress) *shared.Machine {
		t.Helper()
		res := out(s.ApplyReport(Report{ID: id, Time: now, Report: shared.StepReport{Generation: 2, Step: "disk",
			Status: status, Attempt: attempt, Progress: progress}}, index))
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		m, _ := s.Machine(id)
		return m
	}
	report(3, shared.StepRunning, 1, nil)
	report(4, shared.StepSucceeded, 1, nil)
	m := report(5, shared.StepRunning, 1, &shared.Progress{Done: 1, Total: 3})
	if st := m.Steps[0]; st.Status != shared.StepSucceeded {
		t.Fatalf("a late progress report of attempt 1 reopened the finished step: %+v", st)
	}
	if m.State != shared.StateProvisioning {
		t.Fatalf("state %s, want provisioning", m.State)
	}
	m = report(6, shared.StepRunning, 2, nil)
	if st := m.Steps[0]; st.Status != shared.StepRunning || st.Attempt != 2 {
		t.Fatalf("a new attempt must still be recorded as running: %+v", st)
	}
}
