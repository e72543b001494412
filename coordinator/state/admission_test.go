package state

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

var t0 = time.Unix(1_800_000_000, 0).UTC()

// box is a machine's inventory with one NIC per MAC given.
func box(uuid string, macs ...string) shared.Inventory {
	inv := shared.Inventory{System: shared.System{UUID: uuid}}
	for i, mac := range macs {
		inv.NICs = append(inv.NICs, shared.NIC{Name: "eth" + string(rune('0'+i)), MAC: mac, PCIAddress: "0000:00:0" + string(rune('3'+i)) + ".0"})
	}
	return inv
}

// harness applies commands with increasing indexes.
type harness struct {
	t     *testing.T
	s     *Store
	index uint64
}

func newHarness(t *testing.T) *harness { return &harness{t: t, s: New()} }

func (h *harness) next() uint64 { h.index++; return h.index }

func (h *harness) ticket(hash, mac string) {
	h.s.ApplyIssueTicket(IssueTicket{Hash: hash, MAC: mac, Expires: t0.Add(15 * time.Minute), Time: t0}, h.next())
}

func (h *harness) register(c Register) outcome {
	if c.Mode == "" {
		c.Mode = shared.ModeRAM
	}
	if c.Time.IsZero() {
		c.Time = t0.Add(time.Minute)
	}
	return out(h.s.ApplyRegister(c, h.next()))
}

// record is the machine's record as JSON: what a claim must not change.
func (h *harness) record(id shared.MachineID) string {
	m, ok := h.s.Machine(id)
	if !ok {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func (h *harness) lastEvent(id shared.MachineID) shared.Event {
	evs := h.s.Events(id)
	if len(evs) == 0 {
		return shared.Event{}
	}
	return evs[len(evs)-1]
}

const (
	victimID = shared.MachineID("m-victim")
	macA     = "52:54:00:00:00:0a"
	macB     = "52:54:00:00:00:0b"
)

// victim is a registered, admitted machine whose boot target is the disk.
func (h *harness) victim() {
	h.ticket("t-victim", macA)
	res := h.register(Register{ID: victimID, Inventory: box("11111111-2222-4333-8444-555555555555", macA),
		Credential: CredTicket, TicketHash: "t-victim", AdmitAuto: true, AttemptHash: "attempt-1"})
	if res.Err != nil {
		h.t.Fatalf("victim's registration: %v", res.Err)
	}
	h.s.ApplySetBoot(SetBoot{ID: victimID, Boot: shared.BootDisk, Time: t0}, h.next())
}

func TestBootTicketIsSingleUseAndBoundToItsMAC(t *testing.T) {
	h := newHarness(t)
	inv := box("aaaaaaaa-2222-4333-8444-555555555555", macB)
	h.ticket("t1", macA)
	if res := h.register(Register{ID: "m-1", Inventory: inv, Credential: CredTicket, TicketHash: "t1"}); KindOf(res.Err) != KindForbidden {
		t.Fatalf("ticket for MAC %s used by a machine with only %s: got %v, want 403", macA, macB, res.Err)
	}
	if res := h.register(Register{ID: "m-1", Inventory: box("aaaaaaaa-2222-4333-8444-555555555555", macA),
		Credential: CredTicket, TicketHash: "t1"}); KindOf(res.Err) != KindUnauthorized {
		t.Fatalf("the ticket is spent by its first use, even a refused one: got %v, want 401", res.Err)
	}
	if h.s.MachineCount() != 0 {
		t.Fatal("a refused registration created a machine")
	}
	h.s.ApplyIssueTicket(IssueTicket{Hash: "t2", MAC: macB, Expires: t0, Time: t0.Add(-time.Minute)}, h.next())
	if res := h.register(Register{ID: "m-1", Inventory: inv, Credential: CredTicket, TicketHash: "t2"}); KindOf(res.Err) != KindUnauthorized {
		t.Fatalf("expired ticket: got %v, want 401", res.Err)
	}
	h.ticket("t3", macB)
	res := h.register(Register{ID: "m-1", Inventory: inv, Credential: CredTicket, TicketHash: "t3"})
	if res.Err != nil || res.TokenGen != 1 {
		t.Fatalf("a fresh ticket for the machine's MAC: got %v gen %d, want success, token generation 1", res.Err, res.TokenGen)
	}
	if _, ok := h.s.TicketMAC("t3", t0); ok {
		t.Fatal("the ticket is still outstanding after the registration spent it")
	}
}

func TestClaimsOnAnExistingMachineChangeNothingAndAreRecorded(t *testing.T) {
	h := newHarness(t)
	h.victim()
	before, gen := h.record(victimID), h.s.data.TokenGens[victimID]
	attacker := box("11111111-2222-4333-8444-555555555555", macB) // the victim's UUID, its own MAC
	h.ticket("t-att", macB)
	cases := []struct {
		name string
		c    Register
	}{
		{"enrolment token", Register{Credential: CredEnrol}},
		{"stale machine token", Register{Credential: CredMachine, TokenGen: gen - 1}},
		{"ticket for another MAC", Register{Credential: CredTicket, TicketHash: "t-att"}},
	}
	for _, tc := range cases {
		tc.c.ID, tc.c.Inventory, tc.c.From = victimID, attacker, "10.9.9.9"
		res := h.register(tc.c)
		if KindOf(res.Err) != KindIdentity {
			t.Fatalf("%s: got %v, want 409 identity_conflict", tc.name, res.Err)
		}
		if ev := h.lastEvent(victimID); ev.Kind != shared.EventConflict || !strings.Contains(ev.Message, "10.9.9.9") {
			t.Fatalf("%s: last event %+v, want a conflict naming the claimant's address", tc.name, ev)
		}
		if res.Touched != victimID {
			t.Fatalf("%s: the refusal does not name the machine whose timeline changed", tc.name)
		}
	}
	// The victim's own MAC, a fresh ticket, but the coordinator does not expect it to
	// network-boot (its boot target is the disk): refused too.
	h.ticket("t-own", macA)
	res := h.register(Register{ID: victimID, Inventory: box("11111111-2222-4333-8444-555555555555", macA),
		Credential: CredTicket, TicketHash: "t-own"})
	if KindOf(res.Err) != KindIdentity {
		t.Fatalf("ticket while the boot target is the disk: got %v, want identity_conflict", res.Err)
	}
	if after := h.record(victimID); after != before || h.s.data.TokenGens[victimID] != gen {
		t.Fatalf("the refused claims changed the victim's record or token:\nbefore %s\nafter  %s", before, after)
	}
}

func TestRepeatedConflictIsRecordedOnce(t *testing.T) {
	h := newHarness(t)
	h.victim()
	for range 50 {
		h.register(Register{ID: victimID, Inventory: box("11111111-2222-4333-8444-555555555555", macB),
			Credential: CredEnrol, From: "10.9.9.9"})
	}
	n := 0
	for _, ev := range h.s.Events(victimID) {
		if ev.Kind == shared.EventConflict {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d conflict events for one claim repeated 50 times within a minute, want 1", n)
	}
}

func TestTheMachineItselfRegistersAgainAndRotatesItsToken(t *testing.T) {
	h := newHarness(t)
	h.victim()
	gen := h.s.data.TokenGens[victimID]
	// A retry of the victim's own first registration (its answer was lost): same attempt.
	if res := h.register(Register{ID: victimID, Inventory: box("11111111-2222-4333-8444-555555555555", macA),
		Credential: CredTicket, TicketHash: "t-victim", AttemptHash: "attempt-1"}); res.Err != nil || res.TokenGen != gen {
		t.Fatalf("retry of an accepted registration: got %v gen %d, want the same answer (gen %d)", res.Err, res.TokenGen, gen)
	}
	// The installed OS with the kept token; it has lost a NIC and gained one.
	res := h.register(Register{ID: victimID, Inventory: box("11111111-2222-4333-8444-555555555555", macB),
		Credential: CredMachine, TokenGen: gen, Mode: shared.ModeService})
	if res.Err != nil || res.TokenGen != gen+1 {
		t.Fatalf("re-registration with the current token: got %v gen %d, want gen %d", res.Err, res.TokenGen, gen+1)
	}
	if m, ok := h.s.MachineByMAC(mustMAC(t, macA)); ok {
		t.Fatalf("MAC %s still boots as %s after the machine dropped it", macA, m.ID)
	}
	if m, ok := h.s.MachineByMAC(mustMAC(t, macB)); !ok || m.ID != victimID {
		t.Fatalf("MAC %s does not boot as the machine that now has it", macB)
	}
}

func TestAStolenMACIsAConflict(t *testing.T) {
	h := newHarness(t)
	h.victim()
	before := h.record(victimID)
	h.ticket("t-thief", macA)
	res := h.register(Register{ID: "m-thief", Inventory: box("99999999-2222-4333-8444-555555555555", macA),
		Credential: CredTicket, TicketHash: "t-thief", AdmitAuto: true})
	if KindOf(res.Err) != KindIdentity {
		t.Fatalf("a new machine with the victim's MAC: got %v, want identity_conflict", res.Err)
	}
	if _, ok := h.s.Machine("m-thief"); ok {
		t.Fatal("the thief's machine was created")
	}
	if h.record(victimID) != before || h.lastEvent(victimID).Kind != shared.EventConflict {
		t.Fatal("the victim's record changed, or the conflict is not on its timeline")
	}
}

func TestAdmission(t *testing.T) {
	h := newHarness(t)
	h.ticket("t1", macA)
	res := h.register(Register{ID: "m-1", Inventory: box("aaaaaaaa-2222-4333-8444-555555555555", macA),
		Credential: CredTicket, TicketHash: "t1", Labels: map[string]string{"rack": "r1"}})
	if res.Err != nil || res.Summary.Admitted || !strings.HasPrefix(res.Summary.Unmatched, shared.NotAdmittedPrefix) {
		t.Fatalf("an unknown machine: got %+v %v; want registered, not admitted, with the reason", res.Summary, res.Err)
	}
	m, _ := h.s.Machine("m-1")
	if m.Labels["rack"] != "" || m.Facts["rack"] != "r1" {
		t.Fatalf("the agent's label became an operator label: labels %v facts %v", m.Labels, m.Facts)
	}
	plan := &shared.Plan{Generation: 1, Steps: []shared.Step{{Name: "swarm", Kind: shared.StepSwarm, Phase: shared.PhaseDisk}}}
	if r := out(h.s.ApplySetPlan(SetPlan{ID: "m-1", Role: "r", Plan: plan, Time: t0}, h.next())); r.Err == nil {
		t.Fatal("an unadmitted machine was planned")
	}
	// The operator's list admits it and gives it the operator's labels.
	h.s.ApplyPutExpected(PutExpected{Machines: []shared.ExpectedMachine{{MACs: []string{macA}, Hostname: "r1-n01",
		Labels: map[string]string{"rack": "r7"}}}, Time: t0.Add(2 * time.Minute)}, h.next())
	m, _ = h.s.Machine("m-1")
	if !m.Admitted() || m.Admission.How != shared.AdmitExpected || m.Labels["rack"] != "r7" || m.Labels["hostname"] != "r1-n01" || m.Unmatched != "" {
		t.Fatalf("after the import: admission %+v labels %v unmatched %q", m.Admission, m.Labels, m.Unmatched)
	}
	// A second machine matching the same row (by serial spoofing, say) is not admitted.
	h.ticket("t2", macB)
	h.s.ApplyPutExpected(PutExpected{Machines: []shared.ExpectedMachine{{MACs: []string{macA, macB}, Hostname: "r1-n01"}}, Time: t0}, h.next())
	res = h.register(Register{ID: "m-2", Inventory: box("bbbbbbbb-2222-4333-8444-555555555555", macB),
		Credential: CredTicket, TicketHash: "t2"})
	if res.Err != nil || res.Summary.Admitted {
		t.Fatalf("a second machine on a row another holds: got %+v %v, want registered but not admitted", res.Summary, res.Err)
	}
	if h.lastEvent("m-1").Kind != shared.EventConflict {
		t.Fatal("the row's holder shows no conflict")
	}
	// Approval admits it.
	h.s.ApplyAction(Action{ID: "m-2", Action: shared.ActionApprove, By: "alice", Time: t0}, h.next())
	if m, _ := h.s.Machine("m-2"); !m.Admitted() || m.Admission.By != "alice" {
		t.Fatalf("after approve: %+v", m.Admission)
	}
}

func TestMaxMachines(t *testing.T) {
	h := newHarness(t)
	for i, mac := range []string{macA, macB} {
		res := h.register(Register{ID: shared.MachineID("m-" + string(rune('1'+i))), Inventory: box("", mac),
			Credential: CredEnrol, MaxMachines: 1})
		if i == 0 && res.Err != nil {
			t.Fatal(res.Err)
		}
		if i == 1 && (KindOf(res.Err) != KindLimit || !strings.Contains(res.Err.Error(), "--max-machines 1")) {
			t.Fatalf("the second machine with --max-machines 1: got %v, want 429 limit naming the flag", res.Err)
		}
	}
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	hw, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return hw
}

// TestATicketVouchesOnlyForItsMAC: a machine registered with nothing but a boot ticket
// for its own MAC is not admitted by a row for another MAC it claims to have, nor by a
// UUID-only row (PXE firmware broadcasts the UUID); an operator's enrolment token is.
func TestATicketVouchesOnlyForItsMAC(t *testing.T) {
	h := newHarness(t)
	const uuid = "cccccccc-2222-4333-8444-555555555555"
	h.s.ApplyPutExpected(PutExpected{Machines: []shared.ExpectedMachine{{MACs: []string{macB}, Hostname: "real"},
		{UUID: uuid, Hostname: "adopted"}}, Time: t0}, h.next())
	h.ticket("t1", macA)
	inv := box("dddddddd-2222-4333-8444-555555555555", macA, macB)
	if res := h.register(Register{ID: "m-evil", Inventory: inv, Credential: CredTicket, TicketHash: "t1"}); res.Err != nil || res.Summary.Admitted {
		t.Fatalf("ticket for %s, inventory also claiming expected %s: got %+v %v; want registered, not admitted", macA, macB, res.Summary, res.Err)
	}
	h.ticket("t2", "52:54:00:00:00:0c")
	if res := h.register(Register{ID: "m-uuid", Inventory: box(uuid, "52:54:00:00:00:0c"), Credential: CredTicket,
		TicketHash: "t2"}); res.Err != nil || res.Summary.Admitted {
		t.Fatalf("ticket registration with an expected UUID: got %+v %v; want not admitted", res.Summary, res.Err)
	}
	res := h.register(Register{ID: "m-adopted", Inventory: box(uuid), Credential: CredEnrol, Mode: shared.ModeService})
	if res.Err != nil || !res.Summary.Admitted {
		t.Fatalf("enrolment-token registration with the expected UUID: got %+v %v; want admitted", res.Summary, res.Err)
	}
}

// TestImportKeepsTheCoordinatorsPowerRecord: a row's power record is the coordinator's:
// an import cannot set it, and a re-import of the row keeps it.
func TestImportKeepsTheCoordinatorsPowerRecord(t *testing.T) {
	s := New()
	forged := shared.ExpectedMachine{Serial: "S1", Hostname: "n1", Power: shared.PowerInfo{GaveUp: "forged", RecoverAttempts: 9}}
	if _, err := s.ApplyPutExpected(PutExpected{Machines: []shared.ExpectedMachine{forged}, Time: t0}, 1); err != nil {
		t.Fatal(err)
	}
	if got := s.Expected()[0].Power; got != (shared.PowerInfo{}) {
		t.Fatalf("the import set the row's power record: %+v", got)
	}
	if _, err := s.ApplyPowerRecord(PowerRecord{Key: "n1", Action: shared.PowerOn, By: "alice", State: "on", Time: t0}, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyPutExpected(PutExpected{Machines: []shared.ExpectedMachine{forged}, Time: t0}, 3); err != nil {
		t.Fatal(err)
	}
	if got := s.Expected()[0].Power; !got.BootAt.Equal(t0) || got.GaveUp != "" || got.Last.By != "alice" {
		t.Fatalf("after the re-import the row's power record is %+v, want alice's power-on", got)
	}
	if _, err := s.ApplyPowerRecord(PowerRecord{Key: "nope", Action: shared.PowerOn, Time: t0}, 4); err == nil {
		t.Fatal("a power record for an unknown row was accepted")
	}
}
