package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/api"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/shared"
)

// TestUnadmittedMachineGetsNothingThatMatters: under --admit expected a machine that
// registers gets a record and its own token, but no gossip key (not in the answer, not
// from /v1/gossip) and no role, until the operator approves it.
func TestUnadmittedMachineGetsNothingThatMatters(t *testing.T) {
	f := startWith(t, coordinator.DaemonConfig{Admission: api.Admission{Policy: shared.AdmitExpected}})
	ctx := context.Background()
	resp := f.register(t, 1)
	if resp.Machine.Admitted || resp.Gossip.Key != "" {
		t.Fatalf("an unknown machine's registration: admitted %v, gossip key given %v", resp.Machine.Admitted, resp.Gossip.Key != "")
	}
	if !strings.HasPrefix(resp.Machine.Unmatched, shared.NotAdmittedPrefix) {
		t.Fatalf("the answer does not say why nothing happens: %q", resp.Machine.Unmatched)
	}
	machine := f.c.Client(resp.MachineToken)
	if _, err := machine.Gossip(ctx); shared.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("an unadmitted machine's token fetching the gossip key: got %v, want 403", err)
	}
	admin := f.c.Client(f.c.AdminToken)
	if _, err := admin.Action(ctx, resp.Machine.ID, shared.ActionApprove, "seen in rack r4"); err != nil {
		t.Fatal(err)
	}
	g, err := machine.Gossip(ctx)
	if err != nil || g.Key == "" {
		t.Fatalf("after approval the gossip key: %v (empty %v)", err, g == nil || g.Key == "")
	}
}

// TestImportIsAllOrNothing: one bad row refuses the whole import and stores nothing.
func TestImportIsAllOrNothing(t *testing.T) {
	f := start(t)
	body := `{"machines":[{"macs":["52:54:00:00:00:01"],"hostname":"n1"},{"macs":["not-a-mac"]},` +
		`{"hostname":"n3"},{"macs":["52:54:00:00:00:01"],"hostname":"n4"}]}`
	status, text := f.raw(t, "POST", shared.PathExpected, f.c.AdminToken, []byte(body))
	if status != http.StatusBadRequest || !strings.Contains(text, "row 2") || !strings.Contains(text, "row 3") ||
		!strings.Contains(text, "row 4") {
		t.Fatalf("import with three bad rows: %d %s; want 400 naming rows 2, 3 and 4", status, text)
	}
	if rows := f.c.Server.Store().Expected(); len(rows) != 0 {
		t.Fatalf("a refused import stored %d rows", len(rows))
	}
	if status, text := f.raw(t, "POST", shared.PathExpected, f.c.EnrolToken, []byte(`{"machines":[{"macs":["52:54:00:00:00:09"]}]}`)); status != http.StatusForbidden {
		t.Fatalf("an enrolment token importing expected machines: %d %s, want 403", status, text)
	}
}

// TestRegistrationRateLimit: past the burst an enrolment token gets 429 naming the limit,
// and nothing is stored.
func TestRegistrationRateLimit(t *testing.T) {
	f := startWith(t, coordinator.DaemonConfig{Admission: api.Admission{RegisterRate: 0.001, RegisterBurst: 2}})
	ctx := context.Background()
	f.register(t, 1)
	f.register(t, 2)
	before := f.digest(t)
	_, err := f.c.Client(f.c.EnrolToken).Register(ctx, coordinatortest.RegisterRequest(3))
	if shared.StatusOf(err) != http.StatusTooManyRequests || shared.CodeOf(err) != shared.CodeLimit ||
		!strings.Contains(err.Error(), "limit") {
		t.Fatalf("third registration over a burst of 2: got %v, want 429 limit", err)
	}
	if f.digest(t) != before {
		t.Fatal("a rate-limited registration changed the state")
	}
}
