package api

import (
	"errors"
	"net/http"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// Answer maps an error to the envelope the API sends: its HTTP status, code, message
// and the operator's hint. This is the only place where a write's typed error
// (coordinator/state/errors.go) meets HTTP. Unknown errors are 500 without detail
// leaking.
func Answer(err error) *shared.APIError {
	if apiErr, ok := errors.AsType[*shared.APIError](err); ok {
		out := *apiErr
		if out.Status == 0 {
			out.Status = http.StatusInternalServerError
		}
		return &out
	}
	if r, ok := errors.AsType[*state.Rejected](err); ok {
		status, code := rejectedStatus(r.Kind)
		return &shared.APIError{Status: status, Code: code, Message: r.Reason, Hint: hint(r)}
	}
	if maxErr, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return shared.Errorf(http.StatusRequestEntityTooLarge, shared.CodeTooLarge, "send a smaller body",
			"body is larger than the limit of %d bytes", maxErr.Limit)
	}
	switch {
	case errors.Is(err, state.ErrOutcomeUnknown):
		return shared.Errorf(http.StatusServiceUnavailable, shared.CodeOutcomeUnknown,
			"check with `rivet machines show` (or read the object back) before retrying: the write may have been applied",
			"%v", err)
	case errors.Is(err, state.ErrNoLeader):
		return shared.Errorf(http.StatusServiceUnavailable, shared.CodeNoLeader,
			"the cluster has no leader: check `rivet members ls`; a majority of coordinators must be up",
			"no leader to accept the write (%v)", err)
	case errors.Is(err, state.ErrNotApplied):
		return shared.Errorf(http.StatusServiceUnavailable, shared.CodeNotApplied,
			"nothing changed: retry", "%v", err)
	}
	return shared.Errorf(http.StatusInternalServerError, shared.CodeInternal,
		"see the coordinator's log", "internal error: %v", auth.Redact(err.Error()))
}

// rejectedStatus is the HTTP status and code of a kind of refusal.
func rejectedStatus(k state.Kind) (int, string) {
	if a, ok := rejectedAnswers[k]; ok {
		return a.status, a.code
	}
	return http.StatusInternalServerError, shared.CodeInternal
}

var rejectedAnswers = map[state.Kind]struct {
	status int
	code   string
}{
	state.KindInvalid:      {http.StatusBadRequest, shared.CodeBadRequest},
	state.KindUnauthorized: {http.StatusUnauthorized, shared.CodeUnauthorized},
	state.KindForbidden:    {http.StatusForbidden, shared.CodeForbidden},
	state.KindNotFound:     {http.StatusNotFound, shared.CodeNotFound},
	state.KindConflict:     {http.StatusConflict, shared.CodeConflict},
	state.KindIdentity:     {http.StatusConflict, shared.CodeIdentityConflict},
	state.KindPending:      {http.StatusConflict, shared.CodeSwarmPending},
	state.KindLimit:        {http.StatusTooManyRequests, shared.CodeLimit},
}

// hint is what the operator (or the agent) can do about a refusal.
func hint(r *state.Rejected) string {
	switch {
	case r.Rule == state.RuleRetired:
		return "release it with `rivet machines release " + r.Subject + "` to provision it again"
	case r.Rule == state.RuleSwarmPending && r.Subject != "":
		return "retry shortly: manager " + r.Subject + " is creating the swarm"
	}
	return hints[r.Rule]
}

// hints are the operator's next step by the rule that refused, for the rules whose hint
// does not depend on the subject.
var hints = map[state.Rule]string{
	state.RuleMachineUnknown:     "list machines with `rivet machines ls`",
	state.RuleRoleUnknown:        "list roles with `rivet roles ls`",
	state.RuleTokenUnknown:       "list tokens with `rivet tokens ls`",
	state.RuleTokenNameTaken:     "pick another name or delete the old token",
	state.RulePlanOnlyDiscovered: "re-plan it with `rivet machines replan`",
	state.RulePlanNotAdmitted:    "approve it first",
	state.RuleReportGeneration:   "fetch the current plan and start again",
	state.RuleReportFinished:     "retry it with `rivet machines retry`",
	state.RuleAction:             "see the machine's state with `rivet machines show`",
	state.RuleTicket:             "network-boot the machine again for a fresh ticket",
	state.RuleTicketMAC:          "a ticket works only for the machine it was issued to",
	state.RuleIdentityID: "if this really is the same machine, network-boot it (its boot target must be the agent), " +
		"or retire and release the record; the claim is on the machine's timeline",
	state.RuleIdentityMAC: "a MAC belongs to one machine: retire the machine that holds it if the NIC really moved",
	state.RuleMaxMachines: "raise --max-machines, or retire machines you no longer need",
	state.RuleSwarmNotDue: "the agent asks when it runs its swarm step; see the machine's steps with `rivet machines show`",
	state.RuleSwarmPending: "no manager is designated to create the swarm (its creator was released or retired before " +
		"creating it): re-plan one manager with `rivet machines replan`",
	state.RuleSwarmReportEarly:  "retry once the first manager has created the swarm",
	state.RuleSwarmOther:        "make the node leave its swarm, or retire the machine",
	state.RuleSwarmOwnPart:      "a machine reports only its own part in the swarm",
	state.RuleNoBMC:             "import the machine's row with its BMC (bmc_driver, bmc_address, bmc_user, bmc_password_file)",
	state.RuleLabels:            "a machine has at most 64 operator labels; remove some with `rivet machines label ID key-`",
	state.RuleNothingSelected:   "list machines and their labels with `rivet machines ls --output json`",
	state.RuleSwarmManagerLimit: "a swarm needs 3 or 5 managers: demote or retire some",
	state.RuleSwarmOp:           "see the pending operations on the machine's timeline (`rivet machines show`)",
	state.RuleProtocol:          "run `rivet members upgrade-check` and finish the upgrade",
	state.RuleReprovision:       "see the machine's state and timeline with `rivet machines show`",
}
