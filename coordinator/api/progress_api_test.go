package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

// A second progress report for the same step attempt within the interval is answered
// 429 by the gate, before anything reaches Raft; a result report right after it still
// goes through to the store (which refuses it here: the machine has no plan yet).
func TestProgressReportsAreThrottled(t *testing.T) {
	f := start(t)
	m := f.register(t, 1)
	path := shared.MachinePath(shared.PathMachineReport, m.Machine.ID)
	progress := []byte(`{"generation":0,"step":"disk","status":"running","attempt":1,"progress":{"done":1,"total":3}}`)
	// Back to back, well inside the gate's one-second interval.
	status, body := f.raw(t, "POST", path, m.MachineToken, progress)
	status2, body2 := f.raw(t, "POST", path, m.MachineToken, progress)
	if status != http.StatusConflict { // no plan yet: the store refuses it, not the gate
		t.Fatalf("first progress: got %d %s, want the store's 409", status, body)
	}
	status, body = status2, body2
	if status != http.StatusTooManyRequests || !strings.Contains(body, "rate_limited") {
		t.Fatalf("second progress within the interval: got %d %s, want 429 rate_limited", status, body)
	}
	result := []byte(`{"generation":0,"step":"disk","status":"succeeded","attempt":1}`)
	if status, body = f.raw(t, "POST", path, m.MachineToken, result); status != http.StatusConflict {
		t.Fatalf("a result is never throttled: got %d %s, want the store's 409", status, body)
	}
}
