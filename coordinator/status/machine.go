package status

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/api"
	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

type stepRow struct {
	Name, Kind, Phase, Status string
	Attempt                   int
	Percent                   int // -1 unknown
	Done, Total               int64
	Rate                      string
	Error                     string
	Started, Finished         time.Time
}

type labelRow struct{ Key, Value string }

type actionButton struct {
	Action      shared.Action
	Label, Help string
	Danger      bool
}

type machinePage struct {
	page
	M             *shared.Machine
	Labels        []labelRow
	FailureDomain failureDomain
	Domain        string // the machine's value of the failure-domain label
	Steps         []stepRow
	Events        []shared.Event
	Error         *shared.MachineError
	NextStep      string // what to do about the last error
	Actions       []actionButton
	Power         *powerPanel // power.go: admins, machines with a BMC
	Done          string      // the action just carried out
	Failure       string      // why the action just tried failed
}

func (h *Handler) machine(w http.ResponseWriter, r *http.Request, op operator) {
	id := shared.MachineID(r.PathValue("id"))
	m, ok := h.store.Machine(id)
	if id.Validate() != nil || !ok {
		http.Error(w, "no such machine; see the fleet page", http.StatusNotFound)
		return
	}
	p := machinePage{page: h.pageFor(op, string(m.ID), "fleet"), M: redactMachine(m),
		FailureDomain: h.domain, Domain: m.Labels[h.domain.Label],
		Done: r.URL.Query().Get("done"), Failure: r.URL.Query().Get("failed")}
	for k, v := range m.Labels {
		p.Labels = append(p.Labels, labelRow{k, v})
	}
	sort.Slice(p.Labels, func(i, j int) bool { return p.Labels[i].Key < p.Labels[j].Key })
	if m.Plan != nil {
		for i, st := range m.Plan.Steps {
			p.Steps = append(p.Steps, stepRowFor(st, m.Steps[i]))
		}
	}
	evs := h.store.Events(id)
	slices.Reverse(evs) // latest first
	for i := range evs {
		evs[i].Message = auth.Redact(evs[i].Message)
	}
	p.Events = evs
	if e := m.LastError; e != nil {
		p.Error = e
		p.NextStep = nextStep(m)
	}
	p.Actions = actionsFor(m)
	p.Power = h.powerPanel(op, m.ID)
	h.render(w, http.StatusOK, "machine", p)
}

// redactMachine copies what the page shows, with anything token-shaped in free text
// (agent errors quote command output) blanked out.
func redactMachine(m *shared.Machine) *shared.Machine {
	c := *m
	if m.LastError != nil {
		e := *m.LastError
		e.Message, e.Hint = auth.Redact(e.Message), auth.Redact(e.Hint)
		c.LastError = &e
	}
	return &c
}

func stepRowFor(st shared.Step, s shared.StepState) stepRow {
	row := stepRow{Name: st.Name, Kind: string(st.Kind), Phase: string(st.Phase), Status: string(s.Status),
		Attempt: s.Attempt, Percent: -1, Error: auth.Redact(s.Error), Started: s.StartedAt, Finished: s.FinishedAt}
	if pr := s.Progress; pr != nil {
		row.Done, row.Total, row.Rate = pr.Done, pr.Total, shared.HumanRate(pr.BytesPerSec)
		if pct := pr.Percent(); pct >= 0 {
			row.Percent = int(pct)
		}
	}
	if s.Status == shared.StepSucceeded || s.Status == shared.StepSkipped {
		row.Percent = 100
	}
	return row
}

// nextStep says what an operator can do about a failed machine, in plain words.
func nextStep(m *shared.Machine) string {
	var b strings.Builder
	if hint := strings.TrimSpace(auth.Redact(m.LastError.Hint)); hint != "" {
		b.WriteString(strings.TrimRight(hint, "."))
		b.WriteString(". ")
	}
	switch m.State {
	case shared.StateFailed:
		b.WriteString("Fix the cause, then Retry to run the failed step again, or Re-plan to match a role afresh. " +
			"From the CLI: rivet machines retry " + string(m.ID) + ".")
	default:
		b.WriteString("The machine has moved on since this error; it is kept for reference.")
	}
	return b.String()
}

// actionReprovision is the page's button for a re-provisioning (with the role's image;
// another image is the CLI's --image-url). It is a command of its own, not an Action.
const actionReprovision shared.Action = "reprovision"

// actionsFor lists the actions that make sense for the machine's state; the store still
// validates each one, so a stale page cannot do harm.
func actionsFor(m *shared.Machine) []actionButton {
	var out []actionButton
	if !m.Admitted() && m.State != shared.StateRetired {
		out = append(out, actionButton{shared.ActionApprove, "Approve",
			"admit it: it may get a role, the gossip key and Swarm join tokens", true})
	}
	if m.State == shared.StateFailed && m.Plan != nil {
		out = append(out, actionButton{shared.ActionRetry, "Retry", "run the failed step again", false})
	}
	if m.State != shared.StateRetired && m.State != shared.StateLost {
		out = append(out, actionButton{shared.ActionReplan, "Re-plan", "forget the plan and match a role again", false})
	}
	if m.State == shared.StateReady && m.SwarmNodeID != "" && m.Reprovision == nil {
		out = append(out, actionButton{actionReprovision, "Re-provision",
			"take it out of the swarm without dropping its services, then plan and install it again", true})
	}
	if m.State == shared.StateRetired {
		out = append(out, actionButton{shared.ActionRelease, "Release", "bring it back as discovered", false})
	} else {
		out = append(out, actionButton{shared.ActionRetire, "Retire", "take it out of service; boot services stay silent", true})
	}
	return out
}

// action carries out an operator's button press: admins only, from our own form.
func (h *Handler) action(w http.ResponseWriter, r *http.Request, op operator) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	id, act := shared.MachineID(r.PathValue("id")), shared.Action(r.PathValue("action"))
	if id.Validate() != nil || act != actionReprovision && act.Validate() != nil {
		http.Error(w, "unknown machine or action", http.StatusNotFound)
		return
	}
	if !op.IsAdmin() {
		h.log.Info("status action refused: not an admin", "operator", op.Name, "action", act, "machine", id)
		http.Error(w, "a viewer token may look, not act: log in with an admin token", http.StatusForbidden)
		return
	}
	if !h.checkPost(r, op) {
		http.Error(w, "stale or foreign form; reload the page and try again", http.StatusForbidden)
		return
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	if reason == "" {
		reason = "from the status page"
	}
	var cmd state.Command = state.Action{ID: id, Action: act, Reason: reason, By: op.Name, Time: time.Now().UTC()}
	if act == actionReprovision {
		cmd = state.Reprovision{ID: id, Reason: reason, By: op.Name, Time: time.Now().UTC()}
	}
	_, err := h.cfg.Backend.Apply(r.Context(), cmd)
	q := url.Values{}
	switch {
	case err != nil:
		ans := api.Answer(err) // the same words and hint as the API's
		msg := ans.Message
		if ans.Hint != "" {
			msg += " (" + ans.Hint + ")"
		}
		q.Set("failed", msg)
	default:
		q.Set("done", string(act))
		if h.cfg.Kick != nil {
			h.cfg.Kick()
		}
	}
	h.log.Info("status action", "operator", op.Name, "action", act, "machine", id, "ok", !q.Has("failed"))
	http.Redirect(w, r, Prefix+"machines/"+string(id)+"?"+q.Encode(), http.StatusSeeOther)
}
