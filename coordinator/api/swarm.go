package api

import (
	"net/http"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// swarmJoin hands a machine its swarm part. Join tokens go only to a machine whose swarm
// step is due; the first manager to ask creates the swarm.
func (a *API) swarmJoin(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	m, err := a.machine(r)
	if err != nil {
		return err
	}
	st := swarmStep(m)
	if st == nil || (m.State != shared.StateInstalled && m.State != shared.StateJoining && m.State != shared.StateReady) {
		return shared.Errorf(http.StatusConflict, shared.CodeConflict, "wait until the machine is installed",
			"machine %s has no swarm step due (state %s)", m.ID, m.State)
	}
	sw := a.b.Store().Swarm()
	if sw.ClusterID == "" {
		if st.Role != shared.SwarmManager {
			return notYet()
		}
		res, err := a.b.Apply(r.Context(), state.SwarmClaim{ID: m.ID})
		if err := applied(res, err); err != nil {
			return err
		}
		if res.Value != string(m.ID) {
			return notYet()
		}
		writeJSON(w, http.StatusOK, shared.SwarmJoin{Role: shared.SwarmManager, Init: true})
		return nil
	}
	join := shared.SwarmJoin{Role: st.Role, RemoteAddrs: sw.ManagerAddrs, ClusterID: sw.ClusterID,
		Token: sw.WorkerToken}
	if st.Role == shared.SwarmManager {
		join.Token = sw.ManagerToken
	}
	writeJSON(w, http.StatusOK, join)
	return nil
}

func notYet() error {
	return shared.Errorf(http.StatusConflict, shared.CodeSwarmPending, "retry shortly: the first manager is creating the swarm",
		"the swarm does not exist yet")
}

func swarmStep(m *shared.Machine) *shared.SwarmStep {
	if m.Plan == nil {
		return nil
	}
	for _, s := range m.Plan.Steps {
		if s.Kind == shared.StepSwarm {
			return s.Swarm
		}
	}
	return nil
}

func (a *API) swarmReport(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var rep shared.SwarmReport
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &rep); err != nil {
		return err
	}
	res, err := a.b.Apply(r.Context(), state.SwarmReport{ID: p.MachineID, Report: rep, Time: now()})
	if err := applied(res, err); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res.Summary)
	return nil
}
