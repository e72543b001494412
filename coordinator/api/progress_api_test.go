package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

// A second progress report for the same step attempt within the interval is answered
// 429 and writes nothing; a result report right after it still goes through to the store.
func TestProgressReportsAreThrottled(t *testing.T) {
	f := start(t)
	m := f.register(t, 1)
	path := shared.MachinePath(shared.PathMachineReport, m.Machine.ID)
	progress := []byte(`{"generation":0,"step":"disk","status":"running","attempt":1,"progress":{"done":1,"total":3}}`)
	status, body := f.raw(t, "POST", path, m.MachineToken, progress)
	if status != http.StatusConflict { // no plan yet: the store refuses it, not the gate
		t.Fatalf("first progress: got %d %s, want the store's 409", status, body)
	}
	before := f.digest(t)
	status, body = f.raw(t, "POST", path, m.MachineToken, progress)
	if status != http.StatusTooManyRequests || !strings.Contains(body, "rate_limited") {
		t.Fatalf("second progress within the interval: got %d %s, want 429 rate_limited", status, body)
	}
	if f.digest(t) != before {
		t.Fatal("a throttled progress report changed the state")
	}
	result := []byte(`{"generation":0,"step":"disk","status":"succeeded","attempt":1}`)
	if status, body = f.raw(t, "POST", path, m.MachineToken, result); status != http.StatusConflict {
		t.Fatalf("a result is never throttled: got %d %s, want the store's 409", status, body)
	}
}
