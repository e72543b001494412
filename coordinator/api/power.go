package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/powerctl"
	"github.com/rivetmetal/rivet/shared"
)

// Power runs power commands against machines' BMCs (coordinator/powerctl.Manager).
// An unknown machine is an error matching powerctl.ErrUnknownTarget; what the BMC
// answered, failures included, is in the outcomes.
type Power interface {
	Batch(ctx context.Context, req shared.PowerBatchRequest, by string, each func(shared.PowerOutcome)) (shared.PowerBatchResult, error)
}

func (a *API) powerRoutes() {
	a.handle("POST "+shared.PathMachinePower, a.power, allow(auth.KindAdmin))
	a.handle("POST "+shared.PathPower, a.power, allow(auth.KindAdmin))
}

func powerError(err error) error {
	if errors.Is(err, powerctl.ErrUnknownTarget) {
		return shared.Errorf(http.StatusNotFound, shared.CodeNotFound,
			"list machines with `rivet machines ls` and expected ones with `rivet machines expected`", "%v", err)
	}
	return err
}

// decodePower reads either request: one machine's (PathMachinePower, {id} a machine ID,
// expected-row key or host name: a batch of one) or a batch (PathPower).
func decodePower(r *http.Request) (req shared.PowerBatchRequest, one bool, err error) {
	ref := r.PathValue("id")
	if ref == "" {
		return req, false, shared.Decode(r.Body, shared.MaxBody, &req)
	}
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &req.PowerRequest); err != nil {
		return req, true, err
	}
	req.Refs, req.Batch = []string{ref}, 1
	if err := req.Validate(); err != nil {
		return req, true, shared.BadRequest(err)
	}
	return req, true, nil
}

// power runs a command on one machine or many. A batch's answer, with Accept:
// application/x-ndjson, streams one PowerStreamLine per machine as its command ends,
// then one with the result; otherwise (and for one machine) it is one answer at the
// end. A caller that goes away stops the batch: machines not yet started are not
// switched.
func (a *API) power(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	req, one, err := decodePower(r)
	if err != nil {
		return err
	}
	if a.cfg.Power == nil {
		return shared.Errorf(http.StatusServiceUnavailable, shared.CodeInternal, "", "this coordinator has no power manager")
	}
	stream := !one && strings.Contains(r.Header.Get("Accept"), shared.PowerStreamType)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	started := false
	begin := func() {
		if !started {
			w.Header().Set("Content-Type", shared.PowerStreamType)
			w.WriteHeader(http.StatusOK)
			started = true
		}
	}
	var each func(shared.PowerOutcome)
	if stream {
		each = func(o shared.PowerOutcome) {
			begin()
			_ = enc.Encode(shared.PowerStreamLine{Outcome: &o})
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
	res, err := a.cfg.Power.Batch(r.Context(), req, p.Name, each)
	switch {
	case err != nil:
		return powerError(err) // before any outcome: nothing was sent
	case one:
		writeJSON(w, http.StatusOK, res.Outcomes[0])
	case !stream:
		writeJSON(w, http.StatusOK, res)
	default:
		begin()
		_ = enc.Encode(shared.PowerStreamLine{Result: &res})
	}
	return nil
}
