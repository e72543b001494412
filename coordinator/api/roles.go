package api

import (
	"io"
	"net/http"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

func (a *API) listRoles(w http.ResponseWriter, _ *http.Request, _ auth.Principal) error {
	writeJSON(w, http.StatusOK, a.store.Roles())
	return nil
}

func (a *API) getRole(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	role, ok := a.store.Role(r.PathValue("name"))
	if !ok {
		return shared.Errorf(http.StatusNotFound, shared.CodeNotFound, "list roles with `rivet roles ls`",
			"role %s not found", r.PathValue("name"))
	}
	writeJSON(w, http.StatusOK, role)
	return nil
}

// readRoles reads a role file body: YAML or JSON, one role or many.
func readRoles(r *http.Request) (*shared.RoleList, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, shared.MaxBody+1))
	if err != nil {
		return nil, shared.BadRequest(err)
	}
	if len(data) > shared.MaxBody {
		return nil, shared.Errorf(http.StatusRequestEntityTooLarge, shared.CodeTooLarge, "split the role file",
			"body is larger than the limit of %d bytes", shared.MaxBody)
	}
	list, err := shared.ParseRoles(data)
	if err != nil {
		return nil, shared.Errorf(http.StatusBadRequest, shared.CodeBadRequest,
			"check the role file; see packaging/config/roles.example.yaml", "%v", err)
	}
	return list, nil
}

// applyRoles creates or replaces roles; with ?dry_run=1 it changes nothing and says
// what the planner would do with the discovered machines.
func (a *API) applyRoles(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	list, err := readRoles(r)
	if err != nil {
		return err
	}
	res := shared.ApplyResult{DryRun: r.URL.Query().Get("dry_run") == "1"}
	st := a.store
	for _, role := range list.Roles {
		if _, exists := st.Role(role.Name); exists {
			res.Updated = append(res.Updated, role.Name)
		} else {
			res.Created = append(res.Created, role.Name)
		}
	}
	if res.DryRun {
		res.Matches = a.dryRun(list.Roles)
		writeJSON(w, http.StatusOK, res)
		return nil
	}
	for _, role := range list.Roles {
		if _, err := a.cfg.Writer.Apply(r.Context(), state.PutRole{Role: role, Time: now()}); err != nil {
			return err
		}
	}
	a.cfg.Writer.Kick()
	writeJSON(w, http.StatusOK, res)
	return nil
}

// dryRun merges the proposed roles over the stored ones and asks the planner.
func (a *API) dryRun(proposed []shared.Role) []shared.RoleMatch {
	if a.cfg.Planner == nil {
		return nil
	}
	byName := map[string]shared.Role{}
	for _, r := range a.store.Roles() {
		byName[r.Name] = r
	}
	for _, r := range proposed {
		byName[r.Name] = r
	}
	roles := make([]shared.Role, 0, len(byName))
	for _, r := range byName {
		roles = append(roles, r)
	}
	return a.cfg.Planner.DryRun(roles, a.store.MachinesFull())
}

func (a *API) putRole(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	list, err := readRoles(r)
	if err != nil {
		return err
	}
	if len(list.Roles) != 1 || list.Roles[0].Name != r.PathValue("name") {
		return shared.Errorf(http.StatusBadRequest, shared.CodeBadRequest, "",
			"PUT %s takes exactly the role named %s", r.URL.Path, r.PathValue("name"))
	}
	if _, err := a.cfg.Writer.Apply(r.Context(), state.PutRole{Role: list.Roles[0], Time: now()}); err != nil {
		return err
	}
	a.cfg.Writer.Kick()
	writeJSON(w, http.StatusOK, list.Roles[0])
	return nil
}

func (a *API) deleteRole(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	if _, err := a.cfg.Writer.Apply(r.Context(), state.DeleteRole{Name: r.PathValue("name")}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
