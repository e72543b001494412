package state

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

func registerCmd(id shared.MachineID) Register {
	inv := shared.Inventory{System: shared.System{Hostname: "h"}}
	return Register{ID: id, Basis: "uuid", Inventory: inv, Mode: shared.ModeRAM, Time: time.Unix(1, 0)}
}

func TestSubscriptionCoalescesChangesPerMachine(t *testing.T) {
	s := New()
	sub := s.Subscribe()
	defer sub.Close()
	a, b := shared.MachineID("m-000000000000000a"), shared.MachineID("m-000000000000000b")
	v0 := s.ChangeVersion()
	for i := uint64(1); i <= 5; i++ {
		s.ApplyRegister(registerCmd(a), i)
	}
	s.ApplyRegister(registerCmd(b), 6)
	// A failed command changes nothing and is not reported.
	s.ApplyCheckin(Checkin{ID: "m-00000000000000ff", Mode: shared.ModeRAM}, 7)
	select {
	case <-sub.Ready():
	default:
		t.Fatal("no wake-up after changes")
	}
	ids, all := sub.Take()
	if all || len(ids) != 2 {
		t.Fatalf("Take = %v, %v; want the two machines once each", ids, all)
	}
	if got := s.ChangeVersion() - v0; got != 6 {
		t.Errorf("change version grew by %d, want 6", got)
	}
	if ids, _ := sub.Take(); len(ids) != 0 {
		t.Errorf("second Take = %v, want nothing", ids)
	}

	var d Data
	snap := s.Snapshot()
	if err := json.Unmarshal(encode(t, snap), &d); err != nil {
		t.Fatal(err)
	}
	s.Restore(&d, snap.Applied)
	if _, all := sub.Take(); !all {
		t.Error("a restore did not say that everything may have changed")
	}

	sub.Close()
	s.ApplyRegister(registerCmd(a), 8)
	if ids, all := sub.Take(); len(ids) != 0 || all {
		t.Errorf("a closed subscription still records changes: %v %v", ids, all)
	}
}
