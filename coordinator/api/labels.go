package api

import (
	"net/http"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// setLabels sets and removes operator labels on the machines and expected machines the
// request names or selects: one write, all of them or none. New labels may change which
// role a discovered machine matches, so the planner is asked to look again.
func (a *API) setLabels(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req shared.LabelRequest
	if err := shared.Decode(r.Body, shared.MaxBody, &req); err != nil {
		return err
	}
	res, err := a.cfg.Writer.Apply(r.Context(), state.SetLabels{Refs: req.Refs, Selector: req.Selector,
		Set: req.Set, Remove: req.Remove, By: p.Name, Time: now()})
	if err != nil {
		return err
	}
	a.cfg.Writer.Kick()
	writeJSON(w, http.StatusOK, shared.LabelResponse{Message: res.Value})
	return nil
}
