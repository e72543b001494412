package api

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

func (a *API) health(w http.ResponseWriter, _ *http.Request, _ auth.Principal) error {
	h := a.cfg.Node.Health()
	status := http.StatusOK
	if h.Status != shared.HealthOK {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
	return nil
}

func (a *API) members(w http.ResponseWriter, _ *http.Request, _ auth.Principal) error {
	writeJSON(w, http.StatusOK, a.cfg.Cluster.Members())
	return nil
}

func (a *API) digest(w http.ResponseWriter, _ *http.Request, _ auth.Principal) error {
	d, err := a.store.Digest()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (a *API) snapshot(w http.ResponseWriter, _ *http.Request, _ auth.Principal) error {
	if err := a.cfg.Cluster.Snapshot(); err != nil {
		return err
	}
	return a.digest(w, nil, auth.Principal{})
}

// gossip gives the pool's key and addresses to admins and to admitted machines only: an
// unadmitted machine is a record the operator can see and nothing more.
func (a *API) gossip(w http.ResponseWriter, _ *http.Request, p auth.Principal) error {
	if p.Kind == auth.KindMachine {
		if m, ok := a.store.Machine(p.MachineID); !ok || !m.Admitted() {
			return notAdmitted(p.MachineID)
		}
	}
	writeJSON(w, http.StatusOK, a.cfg.Node.GossipInfo())
	return nil
}

// notAdmitted refuses what only an admitted machine may have.
func notAdmitted(id shared.MachineID) error {
	return shared.Errorf(http.StatusForbidden, shared.CodeForbidden,
		"the operator admits it: `rivet machines approve "+string(id)+"` or an expected-machines import",
		"machine %s is not admitted", id)
}

func (a *API) join(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	var req shared.JoinRequest
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &req); err != nil {
		return err
	}
	if err := a.cfg.Cluster.Join(r.Context(), req); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (a *API) internalApply(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return shared.BadRequest(err)
	}
	out, status := a.cfg.Leader.HandleInternalApply(r.Context(), data)
	switch status {
	case http.StatusOK:
	case http.StatusMisdirectedRequest:
		return shared.Errorf(status, shared.CodeNoLeader, "ask the leader", "this coordinator is not the leader")
	case http.StatusBadRequest:
		return shared.Errorf(status, shared.CodeBadRequest, "", "malformed batch of forwarded commands")
	default:
		return shared.Errorf(status, shared.CodeInternal, "", "this coordinator cannot apply the batch (HTTP %d)", status)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
	return nil
}

func (a *API) listTokens(w http.ResponseWriter, _ *http.Request, _ auth.Principal) error {
	writeJSON(w, http.StatusOK, a.store.Tokens())
	return nil
}

// createToken is the only answer that carries a token's secret.
func (a *API) createToken(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	var req shared.TokenRequest
	if err := shared.Decode(r.Body, shared.MaxSmallBody, &req); err != nil {
		return err
	}
	rec, secret := auth.NewToken(req.Name, req.Role, now())
	if _, err := a.cfg.Writer.Apply(r.Context(), state.PutToken{Token: rec}); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, shared.TokenCreated{TokenInfo: rec.Info(), Secret: secret})
	return nil
}

func (a *API) deleteToken(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	if _, err := a.cfg.Writer.Apply(r.Context(), state.DeleteToken{ID: r.PathValue("id")}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// image serves an OS image from the image directory, with Range support so an
// interrupted download can resume. os.Root keeps requests inside the directory.
func (a *API) image(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	name := r.PathValue("file")
	if a.cfg.ImageDir == "" || name == "" || strings.Contains(name, "\\") {
		return shared.Errorf(http.StatusNotFound, shared.CodeNotFound, "", "image not found")
	}
	root, err := os.OpenRoot(a.cfg.ImageDir)
	if err != nil {
		return shared.Errorf(http.StatusNotFound, shared.CodeNotFound,
			"put images in the coordinator's image directory", "no image directory: %v", err)
	}
	defer root.Close()
	f, err := root.Open(filepath.Clean(name))
	if err != nil {
		return shared.Errorf(http.StatusNotFound, shared.CodeNotFound,
			"list the image directory on the coordinator", "image %s not found", name)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || info.IsDir() {
		return shared.Errorf(http.StatusNotFound, shared.CodeNotFound, "", "image %s not found", name)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, name, info.ModTime(), f)
	return nil
}
