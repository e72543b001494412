package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/rivetmetal/rivet/internal/testenv"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/shared"
)

type fixture struct {
	c    *coordinatortest.InProcess
	logs *testenv.LogBuffer
}

func start(t *testing.T) *fixture { return startWith(t, coordinator.DaemonConfig{}) }

func startWith(t *testing.T, dc coordinator.DaemonConfig) *fixture {
	t.Helper()
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := coordinatortest.StartInProcess(context.Background(), t.TempDir(), logger, dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return &fixture{c: c, logs: logs}
}

// raw sends a request with an arbitrary body and token and returns status and body.
func (f *fixture) raw(t *testing.T, method, path, token string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.c.URL+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.c.Client("").HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (f *fixture) digest(t *testing.T) string {
	t.Helper()
	d, err := f.c.Server.Store().Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.SHA256
}

func (f *fixture) register(t *testing.T, i int) *shared.RegisterResponse {
	t.Helper()
	resp, err := f.c.Client(f.c.EnrolToken).Register(context.Background(), coordinatortest.RegisterRequest(i))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestMachineTokenSpeaksOnlyForItsMachine(t *testing.T) {
	f := start(t)
	a, b := f.register(t, 1), f.register(t, 2)
	before := f.digest(t)
	report := []byte(`{"generation":0,"step":"disk","status":"running"}`)
	status, body := f.raw(t, "POST", shared.MachinePath(shared.PathMachineReport, b.Machine.ID), a.MachineToken, report)
	if status != http.StatusForbidden {
		t.Fatalf("A's token writing B: got %d %s, want 403", status, body)
	}
	status, _ = f.raw(t, "PUT", shared.MachinePath(shared.PathMachineBoot, b.Machine.ID), a.MachineToken, []byte(`{"boot":"disk"}`))
	if status != http.StatusForbidden {
		t.Fatalf("A's token setting B's boot: got %d, want 403", status)
	}
	status, _ = f.raw(t, "GET", shared.MachinePath(shared.PathMachine, b.Machine.ID), a.MachineToken, nil)
	if status != http.StatusForbidden {
		t.Fatalf("A's token reading B: got %d, want 403", status)
	}
	if after := f.digest(t); after != before {
		t.Fatal("a refused call changed the state")
	}
	// The same token may speak for its own machine.
	status, body = f.raw(t, "PUT", shared.MachinePath(shared.PathMachineBoot, a.Machine.ID), a.MachineToken, []byte(`{"boot":"disk"}`))
	if status != http.StatusOK {
		t.Fatalf("A's token setting A's boot: got %d %s", status, body)
	}
}

func TestCallsWithoutTokenAreRefused(t *testing.T) {
	f := start(t)
	for _, c := range []struct{ method, path string }{
		{"GET", shared.PathMachines}, {"POST", shared.PathRegister}, {"POST", shared.PathRoles},
		{"GET", shared.PathMembers}, {"POST", shared.PathTokens}, {"GET", shared.PathGossip},
	} {
		status, body := f.raw(t, c.method, c.path, "", []byte(`{}`))
		if status != http.StatusUnauthorized || !strings.Contains(body, `"code":"unauthorized"`) {
			t.Errorf("%s %s without token: %d %s, want 401 with the error envelope", c.method, c.path, status, body)
		}
	}
	status, _ := f.raw(t, "GET", shared.PathMachines, "rvo_abc_def", nil)
	if status != http.StatusUnauthorized {
		t.Errorf("forged token: %d, want 401", status)
	}
	// Health stays open for load balancers.
	if status, _ := f.raw(t, "GET", shared.PathHealth, "", nil); status != http.StatusOK {
		t.Errorf("health without token: %d, want 200", status)
	}
}

func TestViewerCannotWrite(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	admin := f.c.Client(f.c.AdminToken)
	viewer, err := admin.CreateToken(ctx, &shared.TokenRequest{Name: "watcher", Role: shared.TokenViewer})
	if err != nil {
		t.Fatal(err)
	}
	m := f.register(t, 3)
	if _, err := f.c.Client(viewer.Secret).Machines(ctx); err != nil {
		t.Fatalf("viewer cannot read: %v", err)
	}
	before := f.digest(t)
	writes := []struct{ method, path, body string }{
		{"POST", shared.PathRoles, roleJSON},
		{"POST", shared.MachinePath(shared.PathMachineAction, m.Machine.ID, shared.ActionRetire), `{}`},
		{"POST", shared.MachinePath(shared.PathMachineReprovision, m.Machine.ID), `{}`},
		{"POST", shared.PathTokens, `{"name":"x","role":"admin"}`},
		{"DELETE", "/v1/roles/anything", ``},
	}
	for _, w := range writes {
		status, body := f.raw(t, w.method, w.path, viewer.Secret, []byte(w.body))
		if status != http.StatusForbidden {
			t.Errorf("viewer %s %s: %d %s, want 403", w.method, w.path, status, body)
		}
	}
	if f.digest(t) != before {
		t.Fatal("a viewer's refused write changed the state")
	}
}

const roleJSON = `{"name":"worker","selector":{},"install_disk":{"smallest":{"min_size_gb":1}},
 "image":{"url":"/v1/images/os.raw.zst","sha256":"` + "0000000000000000000000000000000000000000000000000000000000000000" + `"},
 "swarm":{"role":"auto"}}`

func TestBadBodiesChangeNothing(t *testing.T) {
	f := start(t)
	f.register(t, 4)
	before := f.digest(t)
	huge := append([]byte(`{"mode":"ram","inventory":{"system":{"vendor":"`), bytes.Repeat([]byte("x"), 2<<20)...)
	cases := []struct {
		name, method, path string
		body               []byte
		want               int
	}{
		{"oversized registration", "POST", shared.PathRegister, huge, http.StatusRequestEntityTooLarge},
		{"malformed JSON", "POST", shared.PathRegister, []byte(`{"mode":`), http.StatusBadRequest},
		{"unknown field", "POST", shared.PathRegister, []byte(`{"mode":"ram","version":"x","inventory":{},"evil":1}`), http.StatusBadRequest},
		{"invalid value", "POST", shared.PathRegister, []byte(`{"mode":"sideways","inventory":{}}`), http.StatusBadRequest},
		{"trailing data", "POST", shared.PathTokens, []byte(`{"name":"a","role":"viewer"} {}`), http.StatusBadRequest},
		{"role with unknown field", "POST", shared.PathRoles, []byte(`{"name":"r","bogus":true}`), http.StatusBadRequest},
		{"role YAML malformed", "POST", shared.PathRoles, []byte("name: [unclosed"), http.StatusBadRequest},
		{"bad machine id", "GET", "/v1/machines/../../etc", nil, http.StatusNotFound},
		{"re-provisioning image without a digest", "POST", "/v1/machines/m-0000000000000001/reprovision",
			[]byte(`{"image":{"url":"/v1/images/x.raw"}}`), http.StatusBadRequest},
		{"image traversal", "GET", "/v1/images/../operator.env", nil, http.StatusNotFound},
	}
	for _, c := range cases {
		status, body := f.raw(t, c.method, c.path, f.c.AdminToken, c.body)
		if status != c.want {
			t.Errorf("%s: got %d %s, want %d", c.name, status, truncate(body), c.want)
			continue
		}
		if c.want != http.StatusNotFound && !json.Valid([]byte(body)) {
			t.Errorf("%s: error is not the JSON envelope: %s", c.name, truncate(body))
		}
	}
	if f.digest(t) != before {
		t.Fatal("bad input changed the state")
	}
}

func TestNoSecretInLogs(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	m := f.register(t, 5)
	admin := f.c.Client(f.c.AdminToken)
	created, err := admin.CreateToken(ctx, &shared.TokenRequest{Name: "ops", Role: shared.TokenAdmin})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.c.Client(m.MachineToken).Gossip(ctx)
	_, _ = f.c.Client("rvo_deadbeef_0123").Machines(ctx) // a failed login is logged too
	cl := f.c.Server.Store().Cluster()
	time.Sleep(50 * time.Millisecond) // let the last request's log line flush; the grep below is the assertion
	logs := f.logs.String()
	if !strings.Contains(logs, "api request") {
		t.Fatal("no API requests were logged: the grep would prove nothing")
	}
	secrets := map[string]string{
		"admin token": f.c.AdminToken, "enrol token": f.c.EnrolToken, "machine token": m.MachineToken,
		"new token": created.Secret, "gossip key": cl.GossipKey, "token secret": cl.TokenSecret,
		"CA key": strings.Split(cl.CAKeyPEM, "\n")[1],
	}
	for name, secret := range secrets {
		if secret == "" {
			t.Fatalf("%s is empty", name)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the %s appears in the coordinator's log", name)
		}
	}
}

// TestRegisteringAgainNeedsTheMachinesOwnToken: the same hardware is one machine; a
// second registration must prove it is that machine (its current token), gets a new
// token, and the old one stops working. The enrolment token alone cannot claim it: the
// claim is refused, changes nothing and shows as a conflict on the machine's timeline.
func TestRegisteringAgainNeedsTheMachinesOwnToken(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	a := f.register(t, 7)
	b, err := f.c.Client(a.MachineToken).Register(ctx, coordinatortest.RegisterRequest(7))
	if err != nil {
		t.Fatalf("re-registering with the machine's own token: %v", err)
	}
	if a.Machine.ID != b.Machine.ID || a.MachineToken == b.MachineToken {
		t.Fatalf("re-registration gave machine %s token rotated=%v; want the same id and a new token",
			b.Machine.ID, a.MachineToken != b.MachineToken)
	}
	if _, err := f.c.Client(a.MachineToken).Gossip(ctx); shared.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("the earlier token after rotation: got %v, want 401", err)
	}
	before := f.digest(t)
	_, err = f.c.Client(f.c.EnrolToken).Register(ctx, coordinatortest.RegisterRequest(7))
	if shared.CodeOf(err) != shared.CodeIdentityConflict {
		t.Fatalf("enrolment token claiming an existing machine: got %v, want 409 identity_conflict", err)
	}
	m, _ := f.c.Server.Store().Machine(b.Machine.ID)
	if gen, _ := f.c.Server.Store().TokenGen(m.ID); auth.MachineToken(f.c.Server.Store().Cluster().TokenSecret, m.ID, gen) != b.MachineToken {
		t.Fatal("the refused claim changed the machine's token")
	}
	evs := f.c.Server.Store().Events(m.ID)
	if last := evs[len(evs)-1]; last.Kind != shared.EventConflict || !strings.Contains(last.Message, "enrol") {
		t.Fatalf("last event %+v; want the identity conflict", last)
	}
	if after := f.digest(t); after == before {
		t.Fatal("digest unchanged: the conflict event was not recorded")
	}
	ms, err := f.c.Client(f.c.AdminToken).Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 {
		t.Fatalf("%d machines after registering the same hardware three times, want 1", len(ms))
	}
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200]
	}
	return s
}

// A check-in answers the machine's summary, with why no role matches it, and never the
// inventory the agent sent at registration: on the path that writes to Raft (the first
// check-in records the agent's mode) and on the read-only one (nothing changed).
func TestCheckinAnswersTheSummary(t *testing.T) {
	f := start(t)
	reg := f.register(t, 3)
	path := shared.MachinePath(shared.PathMachineCheckin, reg.Machine.ID)
	body := []byte(`{"mode":"ram","version":"test","generation":0}`)
	deadline := time.Now().Add(10 * time.Second)
	for first := true; ; first = false {
		status, answer := f.raw(t, "POST", path, reg.MachineToken, body)
		if status != http.StatusOK {
			t.Fatalf("check-in: %d %s", status, answer)
		}
		var m shared.MachineSummary
		dec := json.NewDecoder(strings.NewReader(answer))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("check-in answer is not a machine summary: %v: %s", err, truncate(answer))
		}
		if m.ID != reg.Machine.ID || m.State != shared.StateDiscovered {
			t.Fatalf("check-in answered %s in state %s, want %s discovered", m.ID, m.State, reg.Machine.ID)
		}
		if !first && m.Unmatched != "" {
			break // no role is applied: the planner has said so, and the answer carries it
		}
		if time.Now().After(deadline) {
			t.Fatalf("no unmatched reason in the check-in answer after 10 s: %s", truncate(answer))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
