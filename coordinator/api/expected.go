package api

import (
	"net/http"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// importExpected stores the operator's expected machines: every row or none. Machines
// already registered that match a row are admitted by the same write.
func (a *API) importExpected(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req shared.ImportRequest
	if err := shared.Decode(r.Body, shared.MaxBody, &req); err != nil {
		return err
	}
	res, err := a.cfg.Writer.Apply(r.Context(), state.PutExpected{Machines: req.Machines, By: p.Name, Time: now()})
	if err != nil {
		return err
	}
	a.cfg.Writer.Kick()
	writeJSON(w, http.StatusOK, shared.ImportResponse{Message: res.Value})
	return nil
}

func (a *API) listExpected(w http.ResponseWriter, _ *http.Request, _ auth.Principal) error {
	writeJSON(w, http.StatusOK, a.store.Expected())
	return nil
}
