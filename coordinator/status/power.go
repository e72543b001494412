package status

import (
	"context"
	"net/http"
	"net/url"

	"github.com/rivetmetal/rivet/coordinator/api"
	"github.com/rivetmetal/rivet/shared"
)

// Power runs the power buttons' commands (coordinator/powerctl.Manager): the API's
// power interface, and whether a machine has a BMC (its description, no password).
type Power interface {
	api.Power
	BMCOf(ref string) (string, bool)
}

type powerButton struct {
	Action      shared.PowerAction
	PXEOnce     bool
	Label, Help string
	Danger      bool
}

// powerPanel is the machine page's power section: admins only, for a machine with a BMC.
type powerPanel struct {
	BMC     string // driver user@address
	Buttons []powerButton
}

var powerButtons = []powerButton{
	{shared.PowerStatus, false, "Power status", "ask the BMC whether the machine is on", false},
	{shared.PowerOn, false, "Power on", "switch it on; it boots as its boot order says", false},
	{shared.PowerCycle, true, "Reinstall boot (cycle, PXE once)", "reset it and boot Rivet's agent from the network once", true},
	{shared.PowerCycle, false, "Power cycle", "reset it", true},
	{shared.PowerOff, false, "Power off", "ask the OS to shut down, then cut the power", true},
}

func (h *Handler) powerPanel(op operator, id shared.MachineID) *powerPanel {
	if h.cfg.Power == nil || !op.IsAdmin() {
		return nil
	}
	bmc, ok := h.cfg.Power.BMCOf(string(id))
	if !ok {
		return nil
	}
	return &powerPanel{BMC: bmc, Buttons: powerButtons}
}

// power carries out a power button: admins only, from our own form, and what the BMC
// answered is shown on the page the operator comes back to (and on the timeline).
func (h *Handler) power(w http.ResponseWriter, r *http.Request, op operator) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	id := shared.MachineID(r.PathValue("id"))
	req := shared.PowerRequest{Action: shared.PowerAction(r.PathValue("action"))}
	if id.Validate() != nil || req.Action.Validate() != nil || h.cfg.Power == nil {
		http.Error(w, "unknown machine or power action", http.StatusNotFound)
		return
	}
	if !op.IsAdmin() {
		h.log.Info("status power refused: not an admin", "operator", op.Name, "action", req.Action, "machine", id)
		http.Error(w, "a viewer token may look, not act: log in with an admin token", http.StatusForbidden)
		return
	}
	if !h.checkPost(r, op) {
		http.Error(w, "stale or foreign form; reload the page and try again", http.StatusForbidden)
		return
	}
	req.PXEOnce = r.PostFormValue("pxe_once") == "1"
	if err := req.Validate(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := url.Values{}
	res, err := h.cfg.Power.Batch(context.WithoutCancel(r.Context()), shared.PowerBatchRequest{PowerRequest: req,
		Refs: []string{string(id)}, Batch: 1}, op.Name, nil)
	switch {
	case err != nil:
		q.Set("failed", "power "+string(req.Action)+": "+err.Error())
	case !res.Outcomes[0].OK:
		q.Set("failed", "power "+string(req.Action)+": "+res.Outcomes[0].Error)
	default:
		q.Set("done", "power "+string(req.Action)+", the BMC reports power "+res.Outcomes[0].State)
	}
	h.log.Info("status power", "operator", op.Name, "action", req.Action, "pxe_once", req.PXEOnce, "machine", id, "ok", !q.Has("failed"))
	http.Redirect(w, r, Prefix+"machines/"+string(id)+"?"+q.Encode(), http.StatusSeeOther)
}
