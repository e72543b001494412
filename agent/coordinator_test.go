package agent

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"github.com/rivetmetal/rivet/shared"
)

// fakeCoordinator speaks the coordinator's API over real TLS (the httptest certificate
// is its own CA, so the agent pins it like a cluster CA) and runs a real Serf member
// with the pool's key. Its state handling is the least a coordinator does.
type fakeCoordinator struct {
	t          *testing.T
	srv        *httptest.Server
	enrolToken string
	key        string
	serf       *serf.Serf
	serfEvents chan serf.Event

	mu           sync.Mutex
	rejectEnrol  int // answer this many registrations with 401
	machineToken string
	id           shared.MachineID
	state        shared.State
	plan         *shared.Plan
	steps        map[string]shared.StepState
	reports      []shared.StepReport
	registers    int
	registeredBy []string // "enrol" or "machine", per accepted registration
	checkins     []shared.CheckinRequest
	planPolls    int
	gossipCalls  int
}

func newFakeCoordinator(t *testing.T) *fakeCoordinator {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	fc := &fakeCoordinator{t: t, enrolToken: "enrol-" + secret(t), key: base64.StdEncoding.EncodeToString(raw),
		state: shared.StateDiscovered, steps: map[string]shared.StepState{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+shared.PathRegister, fc.register)
	mux.HandleFunc("GET "+shared.PathGossip, fc.machineOnly(fc.gossipInfo))
	mux.HandleFunc("POST "+shared.PathMachineCheckin, fc.machineOnly(fc.checkin))
	mux.HandleFunc("GET "+shared.PathMachinePlan, fc.machineOnly(fc.planView))
	mux.HandleFunc("POST "+shared.PathMachineReport, fc.machineOnly(fc.report))
	fc.srv = httptest.NewUnstartedServer(mux)
	fc.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the pin test's refused handshakes
	fc.srv.StartTLS()
	t.Cleanup(fc.srv.Close)
	fc.startSerf(raw)
	return fc
}

func secret(t *testing.T) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// startSerf runs the coordinator's gossip member on loopback.
func (fc *fakeCoordinator) startSerf(key []byte) {
	conf := serf.DefaultConfig()
	conf.NodeName = "coord-1"
	conf.Tags = shared.Tags{Kind: shared.KindCoordinator, API: fc.srv.Listener.Addr().String()}.Map()
	conf.MemberlistConfig = memberlist.DefaultLANConfig()
	conf.MemberlistConfig.BindAddr, conf.MemberlistConfig.BindPort = "127.0.0.1", 0
	conf.MemberlistConfig.SecretKey = key
	conf.MemberlistConfig.Logger = log.New(io.Discard, "", 0)
	conf.Logger = log.New(io.Discard, "", 0)
	conf.LogOutput = nil
	fc.serfEvents = make(chan serf.Event, 1024)
	conf.EventCh = fc.serfEvents
	s, err := serf.Create(conf)
	if err != nil {
		fc.t.Fatal(err)
	}
	fc.t.Cleanup(func() { _ = s.Shutdown() })
	go func() { // drain: Serf blocks on a full channel
		for {
			select {
			case <-fc.serfEvents:
			case <-s.ShutdownCh():
				return
			}
		}
	}()
	fc.serf = s
}

func (fc *fakeCoordinator) gossipAddr() string {
	m := fc.serf.LocalMember()
	return m.Addr.String() + ":" + strconv.Itoa(int(m.Port))
}

func (fc *fakeCoordinator) fingerprint() string { return shared.Fingerprint(fc.srv.Certificate().Raw) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, shared.ErrorBody{Error: shared.APIError{Code: code, Message: msg}})
}

func bearer(r *http.Request) string {
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

func (fc *fakeCoordinator) register(w http.ResponseWriter, r *http.Request) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	by := "enrol"
	if fc.machineToken != "" && bearer(r) == fc.machineToken {
		by = "machine" // the machine proving it is itself; the real coordinator rotates the token
	}
	if (by == "enrol" && bearer(r) != fc.enrolToken) || fc.rejectEnrol > 0 {
		if fc.rejectEnrol > 0 {
			fc.rejectEnrol--
		}
		writeErr(w, http.StatusUnauthorized, shared.CodeUnauthorized, "unknown token")
		return
	}
	var req shared.RegisterRequest
	if err := shared.Decode(r.Body, shared.MaxBody, &req); err != nil {
		writeErr(w, http.StatusBadRequest, shared.CodeBadRequest, err.Error())
		return
	}
	ident, err := shared.DeriveMachineID(&req.Inventory)
	if err != nil {
		writeErr(w, http.StatusBadRequest, shared.CodeBadRequest, err.Error())
		return
	}
	fc.registers++
	fc.registeredBy = append(fc.registeredBy, by)
	fc.id = ident.ID
	fc.machineToken = "mt-" + secret(fc.t)
	writeJSON(w, http.StatusOK, shared.RegisterResponse{
		Machine:      shared.MachineSummary{ID: ident.ID, State: fc.state, Admitted: true},
		Basis:        ident.Basis,
		MachineToken: fc.machineToken,
		Gossip:       shared.GossipInfo{Key: fc.key, Addrs: []string{fc.gossipAddr()}},
	})
}

// machineOnly admits the machine token of the registered machine, for its own id.
func (fc *fakeCoordinator) machineOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fc.mu.Lock()
		ok := fc.machineToken != "" && bearer(r) == fc.machineToken &&
			(r.PathValue("id") == "" || r.PathValue("id") == string(fc.id))
		fc.mu.Unlock()
		if !ok {
			writeErr(w, http.StatusUnauthorized, shared.CodeUnauthorized, "bad machine token")
			return
		}
		h(w, r)
	}
}

func (fc *fakeCoordinator) gossipInfo(w http.ResponseWriter, _ *http.Request) {
	fc.mu.Lock()
	fc.gossipCalls++
	fc.mu.Unlock()
	writeJSON(w, http.StatusOK, shared.GossipInfo{Key: fc.key, Addrs: []string{fc.gossipAddr()}})
}

func (fc *fakeCoordinator) checkin(w http.ResponseWriter, r *http.Request) {
	var req shared.CheckinRequest
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &req); err != nil {
		writeErr(w, http.StatusBadRequest, shared.CodeBadRequest, err.Error())
		return
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.checkins = append(fc.checkins, req)
	writeJSON(w, http.StatusOK, shared.MachineSummary{ID: fc.id, State: fc.state, Admitted: true})
}

func (fc *fakeCoordinator) planView(w http.ResponseWriter, _ *http.Request) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.planPolls++
	view := shared.PlanView{State: fc.state, Plan: fc.plan}
	if fc.plan != nil {
		for _, s := range fc.plan.Steps {
			if st, ok := fc.steps[s.Name]; ok {
				view.Steps = append(view.Steps, st)
			}
		}
	}
	writeJSON(w, http.StatusOK, view)
}

func (fc *fakeCoordinator) report(w http.ResponseWriter, r *http.Request) {
	var rep shared.StepReport
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &rep); err != nil {
		writeErr(w, http.StatusBadRequest, shared.CodeBadRequest, err.Error())
		return
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.plan == nil || rep.Generation != fc.plan.Generation {
		writeErr(w, http.StatusConflict, shared.CodeConflict, "stale generation")
		return
	}
	fc.reports = append(fc.reports, rep)
	fc.steps[rep.Step] = shared.StepState{Name: rep.Step, Status: rep.Status, Attempt: rep.Attempt}
	if rep.Status == shared.StepRunning {
		fc.state = shared.StateProvisioning
	}
	w.WriteHeader(http.StatusNoContent)
}

// setPlan gives the machine a plan and moves it to planned.
func (fc *fakeCoordinator) setPlan(p *shared.Plan) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	p.MachineID = fc.id
	fc.plan = p
	fc.state = shared.StatePlanned
}

func (fc *fakeCoordinator) snapshot() (regs, polls int, reports []shared.StepReport) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.registers, fc.planPolls, append([]shared.StepReport(nil), fc.reports...)
}

// member returns the agent's member as the coordinator sees it.
func (fc *fakeCoordinator) member(name string) (serf.Member, bool) {
	for _, m := range fc.serf.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return serf.Member{}, false
}
