package api

import (
	"net"
	"net/http"
	"time"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

func (a *API) register(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req shared.RegisterRequest
	if err := shared.Decode(r.Body, shared.MaxBody, &req); err != nil {
		return err
	}
	ident, err := shared.DeriveMachineID(&req.Inventory)
	if err != nil {
		return shared.BadRequest(err)
	}
	cmd := state.Register{ID: ident.ID, Basis: ident.Basis, Inventory: req.Inventory,
		Labels: req.Labels, Mode: req.Mode, Version: req.Version, Addr: req.Addr, Time: now(),
		From: remoteIP(r), AdmitAuto: a.cfg.Admission.Policy == shared.AdmitAuto, MaxMachines: a.cfg.Admission.MaxMachines}
	if cmd.Addr == "" {
		cmd.Addr = cmd.From
	}
	if req.Attempt != "" {
		cmd.AttemptHash = auth.Hash(req.Attempt)
	}
	switch p.Kind {
	case auth.KindTicket:
		cmd.Credential, cmd.TicketHash = state.CredTicket, p.Ticket
	case auth.KindMachine:
		if p.MachineID != ident.ID {
			a.metrics.conflicts.Inc()
			return shared.Errorf(http.StatusForbidden, shared.CodeIdentityConflict,
				"a machine token registers only the machine it was issued to",
				"this is machine %s's token, but the inventory is machine %s's", p.MachineID, ident.ID)
		}
		cmd.Credential, cmd.TokenGen = state.CredMachine, p.TokenGen
	default:
		cmd.Credential = state.CredEnrol
	}
	if err := a.registrationAllowed(p, cmd.From); err != nil {
		return err
	}
	res, err := a.cfg.Writer.Apply(r.Context(), cmd)
	if err != nil {
		if state.KindOf(err) == state.KindIdentity {
			a.metrics.conflicts.Inc()
			a.log.Warn("identity conflict: registration refused", "machine", ident.ID, "from", cmd.From,
				"credential", cmd.Credential)
		}
		return err
	}
	// No planner kick: the leader plans once discovery settles, on its own ticker.
	resp := shared.RegisterResponse{
		Machine:      *res.Summary,
		Basis:        ident.Basis,
		MachineToken: auth.MachineToken(a.store.Cluster().TokenSecret, ident.ID, res.TokenGen),
	}
	if res.Summary.Admitted {
		resp.Gossip = a.cfg.Node.GossipInfo()
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// registrationAllowed applies the per-credential rate limit: per token, and for boot
// tickets (one each, so a limit per ticket means nothing) per source address.
func (a *API) registrationAllowed(p auth.Principal, from string) error {
	key := string(p.Kind) + ":" + p.Name
	if p.Kind == auth.KindTicket {
		key = "ticket-from:" + from
	}
	ok, retry := a.registrations.allow(key, time.Now())
	if ok {
		return nil
	}
	a.metrics.registrationsLimited.Inc()
	return shared.Errorf(http.StatusTooManyRequests, shared.CodeLimit,
		"retry in "+retry.Round(time.Second).String()+", or raise --register-rate",
		"too many registrations with this credential (limit %g a second, burst %d)",
		a.cfg.Admission.RegisterRate, a.cfg.Admission.RegisterBurst)
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

func now() time.Time { return time.Now().UTC() }

func (a *API) listMachines(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	q := r.URL.Query()
	all := a.store.Machines()
	if q.Get("expected") == "1" || q.Get("state") == string(shared.StateExpected) {
		all = append(all, a.store.ExpectedPending()...)
	}
	out := make([]shared.MachineSummary, 0, len(all))
	for _, m := range all {
		if s := q.Get("state"); s != "" && string(m.State) != s {
			continue
		}
		if role := q.Get("role"); role != "" && m.Role != role {
			continue
		}
		out = append(out, m)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) machine(r *http.Request) (*shared.Machine, error) {
	id := shared.MachineID(r.PathValue("id"))
	if err := id.Validate(); err != nil {
		return nil, shared.BadRequest(err)
	}
	m, ok := a.store.Machine(id)
	if !ok {
		return nil, shared.Errorf(http.StatusNotFound, shared.CodeNotFound,
			"list machines with `rivet machines ls`", "machine %s not found", id)
	}
	return m, nil
}

func (a *API) getMachine(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	m, err := a.machine(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

func (a *API) getEvents(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	m, err := a.machine(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a.store.Events(m.ID))
	return nil
}

func (a *API) getPlan(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	m, err := a.machine(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, shared.PlanView{State: m.State, Plan: m.Plan, Steps: m.Steps})
	return nil
}

func (a *API) report(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var rep shared.StepReport
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &rep); err != nil {
		return err
	}
	if rep.Status == shared.StepRunning && rep.Progress != nil {
		every := progressEvery(a.store.MachineCount())
		if !a.progress.allow(progressKey{p.MachineID, rep.Step, rep.Attempt}, time.Now(), every) {
			return throttled(every)
		}
	}
	res, err := a.cfg.Writer.Apply(r.Context(), state.Report{ID: p.MachineID, Report: rep, Time: now()})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res.Summary)
	return nil
}

// checkin writes to Raft only when something changes: liveness never goes through Raft.
// It answers the machine's summary: every agent checks in every poll interval, and the
// inventory it sent at registration would be most of each answer.
func (a *API) checkin(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req shared.CheckinRequest
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &req); err != nil {
		return err
	}
	m, err := a.machine(r)
	if err != nil {
		return err
	}
	if !checkinChanges(m, &req) {
		writeJSON(w, http.StatusOK, m.Summary())
		return nil
	}
	res, err := a.cfg.Writer.Apply(r.Context(), state.Checkin{ID: p.MachineID, Mode: req.Mode,
		Version: req.Version, Addr: req.Addr, Time: now()})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res.Summary)
	return nil
}

func checkinChanges(m *shared.Machine, req *shared.CheckinRequest) bool {
	firstDiskBoot := req.Mode == shared.ModeService && m.Boot == shared.BootDisk &&
		(m.State == shared.StateProvisioning || m.State == shared.StatePlanned)
	return m.Agent.Mode != req.Mode || m.Agent.Version != req.Version ||
		(req.Addr != "" && req.Addr != m.Addr) || m.State == shared.StateLost || firstDiskBoot
}

func (a *API) setBoot(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req shared.BootRequest
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &req); err != nil {
		return err
	}
	m, err := a.machine(r)
	if err != nil {
		return err
	}
	if p.Kind == auth.KindMachine && req.Boot == shared.BootNone {
		return shared.Errorf(http.StatusForbidden, shared.CodeForbidden, "an operator retires machines",
			"a machine may not silence its own boot")
	}
	res, err := a.cfg.Writer.Apply(r.Context(), state.SetBoot{ID: m.ID, Boot: req.Boot, Time: now()})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res.Machine)
	return nil
}

func (a *API) reprovision(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req shared.ReprovisionRequest
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &req); err != nil {
		return err
	}
	m, err := a.machine(r)
	if err != nil {
		return err
	}
	res, err := a.cfg.Writer.Apply(r.Context(), state.Reprovision{ID: m.ID, Image: req.Image, Reason: req.Reason,
		NoStandIn: req.AllowFewerManagers, Via: req.Via, By: p.Name, Time: now()})
	if err != nil {
		return err
	}
	a.cfg.Writer.Kick()
	writeJSON(w, http.StatusOK, res.Machine)
	return nil
}

// kexec answers a re-imaged machine's installed agent with the RAM agent's boot. The
// answer holds a boot ticket; it goes only to the machine itself, over TLS.
func (a *API) kexec(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	mac, err := a.store.KexecMAC(p.MachineID)
	if err != nil {
		return err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return shared.Errorf(http.StatusConflict, shared.CodeConflict, "", "machine %s: recorded MAC %q: %v", p.MachineID, mac, err)
	}
	if a.cfg.AgentBoot == nil {
		return shared.Errorf(http.StatusServiceUnavailable, shared.CodeInternal, "ask a coordinator on the machine's boot network",
			"this coordinator serves no boot services")
	}
	answer, err := a.cfg.AgentBoot.AgentBoot(r.Context(), hw)
	if err != nil {
		return err
	}
	a.log.Info("kexec boot handed out", "machine", p.MachineID, "mac", mac, "kernel", answer.Kernel.URL)
	writeJSON(w, http.StatusOK, answer)
	return nil
}

func (a *API) action(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req shared.ActionRequest
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &req); err != nil {
		return err
	}
	m, err := a.machine(r)
	if err != nil {
		return err
	}
	res, err := a.cfg.Writer.Apply(r.Context(), state.Action{ID: m.ID, Action: shared.Action(r.PathValue("action")),
		Reason: req.Reason, By: p.Name, Time: now()})
	if err != nil {
		return err
	}
	a.cfg.Writer.Kick()
	writeJSON(w, http.StatusOK, res.Machine)
	return nil
}
