package api

import (
	"net/http"
	"strconv"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// swarmJoin hands a machine its swarm part. The rules (who is told to init, who gets
// which token, once per step attempt) live in state.ApplySwarmJoin, where every
// coordinator applies them in log order. While the swarm does not exist, this
// coordinator's own copy answers "pending" to a machine whose step is due without a
// write: managers poll while the first one creates it. Everything else is decided by
// the leader (this copy may lag behind it).
func (a *API) swarmJoin(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	m, err := a.machine(r)
	if err != nil {
		return err
	}
	if cluster, initBy := a.store.SwarmCreation(); cluster == "" && initBy != m.ID {
		if _, _, err := state.SwarmDue(m); err == nil {
			return state.SwarmPending(initBy)
		}
	}
	res, err := a.cfg.Writer.Apply(r.Context(), state.SwarmJoin{ID: p.MachineID, Time: now()})
	if err != nil {
		return err
	}
	if res.Join == nil {
		return shared.Errorf(http.StatusInternalServerError, shared.CodeInternal, "see the coordinator's log",
			"the swarm join command gave no answer")
	}
	writeJSON(w, http.StatusOK, res.Join)
	return nil
}

// swarmReport records a node's part in the swarm; the rules are in
// state.ApplySwarmReport. The answer tells a manager when to rotate the manager token.
func (a *API) swarmReport(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var rep shared.SwarmReport
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &rep); err != nil {
		return err
	}
	res, err := a.cfg.Writer.Apply(r.Context(), state.SwarmReport{ID: p.MachineID, Report: rep, Time: now(), Rules: state.SwarmRules})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, shared.SwarmReportAnswer{MachineSummary: *res.Summary,
		RotateManagerToken: res.Value == state.RotateManagerToken})
	return nil
}

// swarmOps lists the day-two operations this machine, a manager, is to run.
func (a *API) swarmOps(w http.ResponseWriter, _ *http.Request, p auth.Principal) error {
	writeJSON(w, http.StatusOK, shared.SwarmOps{Ops: a.store.SwarmOpsFor(p.MachineID)})
	return nil
}

// swarmOpDone takes the runner's report of one operation; state.ApplySwarmOpDone checks
// that the operation is this machine's to report.
func (a *API) swarmOpDone(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	id, err := strconv.ParseUint(r.PathValue("op"), 10, 64)
	if err != nil {
		return shared.Errorf(http.StatusBadRequest, shared.CodeBadRequest, "", "operation id %q: want a number", r.PathValue("op"))
	}
	var rep shared.SwarmOpReport
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &rep); err != nil {
		return err
	}
	if _, err := a.cfg.Writer.Apply(r.Context(), state.SwarmOpDone{ID: id, Runner: p.MachineID, Time: now(), Report: rep}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
