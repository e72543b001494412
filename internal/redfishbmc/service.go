package redfishbmc

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// maxBody bounds a request body: the service takes small JSON objects only.
const maxBody = 64 << 10

// Reset types the service can offer (Config.ResetTypes picks), as
// ResetType@Redfish.AllowableValues lists them.
var resetTypes = []string{"On", "ForceOn", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle"}

// ServeHTTP routes a request. The service root is open, as Redfish requires; everything
// under it needs the user's password.
func (b *BMC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch path {
	case "/redfish":
		b.get(w, r, map[string]any{"v1": "/redfish/v1/"})
		return
	case "/redfish/v1":
		b.get(w, r, b.root())
		return
	}
	if !b.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="redfishbmc", charset="UTF-8"`)
		writeError(w, http.StatusUnauthorized, "ResourceAtUriUnauthorized",
			"The user name or password is wrong.", "Give the BMC user's name and password (HTTP basic auth).")
		b.log.Warn("redfishbmc: refused a request without a valid password", "method", r.Method, "path", path,
			"remote", r.RemoteAddr)
		return
	}
	sys := b.SystemPath()
	switch path {
	case "/redfish/v1/Systems":
		b.get(w, r, map[string]any{
			"@odata.id":           "/redfish/v1/Systems",
			"@odata.type":         "#ComputerSystemCollection.ComputerSystemCollection",
			"Name":                "Computer System Collection",
			"Members":             []any{map[string]string{"@odata.id": sys}},
			"Members@odata.count": 1,
		})
	case sys:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			b.getSystem(w, r)
		case http.MethodPatch:
			b.patchSystem(w, r)
		default:
			notAllowed(w, "GET, HEAD, PATCH")
		}
	case sys + "/Actions/ComputerSystem.Reset":
		if r.Method != http.MethodPost {
			notAllowed(w, "POST")
			return
		}
		b.reset(w, r)
	default:
		writeError(w, http.StatusNotFound, "ResourceMissingAtURI",
			fmt.Sprintf("The resource at the URI %s was not found.", r.URL.Path), "Use the URIs the service root links to.")
	}
}

// authorized checks basic auth in constant time: both the user and the password are
// compared as SHA-256 sums, so neither their lengths nor the first differing byte show.
func (b *BMC) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	gotU, wantU := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(b.cfg.User))
	gotP, wantP := sha256.Sum256([]byte(pass)), sha256.Sum256([]byte(b.cfg.Password))
	return subtle.ConstantTimeCompare(gotU[:], wantU[:])&subtle.ConstantTimeCompare(gotP[:], wantP[:]) == 1
}

func (b *BMC) root() map[string]any {
	return map[string]any{
		"@odata.id":      "/redfish/v1",
		"@odata.type":    "#ServiceRoot.v1_5_0.ServiceRoot",
		"Id":             "RootService",
		"Name":           "Rivet lab BMC",
		"RedfishVersion": "1.6.0",
		"UUID":           "00000000-0000-0000-0000-000000000000",
		"Systems":        map[string]string{"@odata.id": "/redfish/v1/Systems"},
		"Links":          map[string]any{},
	}
}

func (b *BMC) getSystem(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := b.actionContext(r)
	defer cancel()
	on, err := b.cfg.Chassis.PowerState(ctx)
	if err != nil {
		b.chassisFailed(w, "reading the power state", err)
		return
	}
	state := "Off"
	if on {
		state = "On"
	}
	b.mu.Lock()
	target, enabled := b.bootTarget, b.bootEnabled
	b.mu.Unlock()
	sys := b.SystemPath()
	b.get(w, r, map[string]any{
		"@odata.id":   sys,
		"@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
		"Id":          b.cfg.SystemID,
		"Name":        "Rivet lab machine",
		"SystemType":  "Physical",
		"PowerState":  state,
		"Status":      map[string]string{"State": "Enabled", "Health": "OK"},
		"Boot": map[string]any{
			"BootSourceOverrideTarget":                          target,
			"BootSourceOverrideTarget@Redfish.AllowableValues":  []string{"None", BootPxe, BootHdd},
			"BootSourceOverrideEnabled":                         enabled,
			"BootSourceOverrideEnabled@Redfish.AllowableValues": []string{"Disabled", "Once"},
		},
		"Actions": map[string]any{
			"#ComputerSystem.Reset": map[string]any{
				"target":                            sys + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": b.cfg.ResetTypes,
			},
		},
	})
}

// patchSystem takes a one-time boot override: {"Boot": {"BootSourceOverrideTarget":
// "Pxe"|"Hdd", "BootSourceOverrideEnabled": "Once"}}. Nothing else may be changed.
func (b *BMC) patchSystem(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Boot *struct {
			Target  *string `json:"BootSourceOverrideTarget"`
			Enabled *string `json:"BootSourceOverrideEnabled"`
		}
	}
	if !decode(w, r, &req) {
		return
	}
	if req.Boot == nil || req.Boot.Target == nil {
		writeError(w, http.StatusBadRequest, "PropertyMissing",
			"The property Boot/BootSourceOverrideTarget is required.", "Give Boot.BootSourceOverrideTarget.")
		return
	}
	target := *req.Boot.Target
	if target != BootPxe && target != BootHdd {
		writeError(w, http.StatusBadRequest, "PropertyValueNotInList",
			fmt.Sprintf("The value %q for the property BootSourceOverrideTarget is not in the list of acceptable values.", target),
			"Give Pxe or Hdd.")
		return
	}
	if req.Boot.Enabled != nil && *req.Boot.Enabled != "Once" {
		writeError(w, http.StatusBadRequest, "PropertyValueNotInList",
			fmt.Sprintf("The value %q for the property BootSourceOverrideEnabled is not in the list of acceptable values.", *req.Boot.Enabled),
			"This service takes one-time overrides only: give Once.")
		return
	}
	ctx, cancel := b.actionContext(r)
	defer cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.cfg.Chassis.SetBootOnce(ctx, target); err != nil {
		b.chassisFailed(w, "setting the boot device", err)
		return
	}
	b.bootTarget, b.bootEnabled = target, "Once"
	b.log.Info("redfishbmc: boot override set", "target", target)
	w.WriteHeader(http.StatusNoContent)
}

// reset runs ComputerSystem.Reset {"ResetType": ...}.
func (b *BMC) reset(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ResetType *string
	}
	if !decode(w, r, &req) {
		return
	}
	if req.ResetType == nil {
		writeError(w, http.StatusBadRequest, "ActionParameterMissing",
			"The action ComputerSystem.Reset requires the parameter ResetType.", "Give ResetType.")
		return
	}
	rt := *req.ResetType
	if !slices.Contains(b.cfg.ResetTypes, rt) {
		writeError(w, http.StatusBadRequest, "ActionParameterValueNotInList",
			fmt.Sprintf("The value %q for the parameter ResetType in the action ComputerSystem.Reset is not in the list of acceptable values.", rt),
			"Give one of "+strings.Join(b.cfg.ResetTypes, ", ")+".")
		return
	}
	ctx, cancel := b.actionContext(r)
	defer cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.cfg.Chassis
	var err error
	starts := false // the firmware runs from the start, and uses the boot override
	switch rt {
	case "On", "ForceOn":
		var on bool
		if on, err = c.PowerState(ctx); err == nil && !on {
			err, starts = c.SetPower(ctx, true), true
		}
	case "ForceOff":
		err = c.SetPower(ctx, false)
	case "GracefulShutdown":
		err = c.Shutdown(ctx)
	case "ForceRestart", "PowerCycle":
		err, starts = c.Reset(ctx), true
	}
	if err != nil {
		b.chassisFailed(w, "ResetType "+rt, err)
		return
	}
	if starts {
		b.bootTarget, b.bootEnabled = "None", "Disabled"
	}
	b.log.Info("redfishbmc: reset", "type", rt)
	w.WriteHeader(http.StatusNoContent)
}

// decode reads a JSON object body into v, or answers 400 and returns false.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "MalformedJSON",
			"The request body submitted was malformed JSON and could not be parsed by the receiving service: "+err.Error(),
			"Send one JSON object with the properties this resource takes.")
		return false
	}
	return true
}

func (b *BMC) chassisFailed(w http.ResponseWriter, what string, err error) {
	b.log.Error("redfishbmc: chassis failed", "action", what, "err", err)
	writeError(w, http.StatusInternalServerError, "InternalError",
		fmt.Sprintf("The machine failed %s: %v", what, err), "Check the machine behind the BMC.")
}

func (b *BMC) get(w http.ResponseWriter, r *http.Request, body any) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		notAllowed(w, "GET, HEAD")
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func notAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "OperationNotAllowed",
		"The HTTP method is not allowed on this resource.", "Use "+allow+".")
}

// writeError answers with a Redfish error body: the general error, and the message of
// the DMTF Base registry that says what went wrong.
func writeError(w http.ResponseWriter, status int, messageID, message, resolution string) {
	const base = "Base.1.8."
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"code":    base + "GeneralError",
		"message": "A general error has occurred. See ExtendedInfo for more information.",
		"@Message.ExtendedInfo": []any{map[string]string{
			"@odata.type": "#Message.v1_0_0.Message",
			"MessageId":   base + messageID,
			"Message":     message,
			"Severity":    "Warning",
			"Resolution":  resolution,
		}},
	}})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body) // maps of strings: cannot fail
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_, _ = io.Copy(w, &buf)
}
