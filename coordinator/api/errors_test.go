package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/shared"
)

// TestAnswerMapsTheWritePathsErrors: each typed error of the write path gets its one
// status, code and hint here, and nowhere else.
func TestAnswerMapsTheWritePathsErrors(t *testing.T) {
	type answerCase struct {
		err        error
		status     int
		code, hint string
	}
	cases := []answerCase{
		{&state.Rejected{Kind: state.KindNotFound, Rule: state.RuleMachineUnknown, Reason: "machine m-1 not found"},
			http.StatusNotFound, shared.CodeNotFound, "rivet machines ls"},
		{&state.Rejected{Kind: state.KindConflict, Rule: state.RuleAction, Reason: "retire m-1: no"},
			http.StatusConflict, shared.CodeConflict, "rivet machines show"},
		{&state.Rejected{Kind: state.KindInvalid, Rule: state.RuleReportStep, Reason: `plan has no step "x"`},
			http.StatusBadRequest, shared.CodeBadRequest, ""},
		{&state.Rejected{Kind: state.KindForbidden, Rule: state.RuleRetired, Subject: "m-1", Reason: "machine m-1 is retired"},
			http.StatusForbidden, shared.CodeForbidden, "rivet machines release m-1"},
		{&state.Rejected{Kind: state.KindIdentity, Rule: state.RuleIdentityMAC, Reason: "MAC x belongs to m-2"},
			http.StatusConflict, shared.CodeIdentityConflict, "retire the machine that holds it"},
		{&state.Rejected{Kind: state.KindPending, Rule: state.RuleSwarmPending, Subject: "m-3", Reason: "the swarm does not exist yet"},
			http.StatusConflict, shared.CodeSwarmPending, "manager m-3 is creating"},
		{&state.Rejected{Kind: state.KindLimit, Rule: state.RuleMaxMachines, Reason: "limit"},
			http.StatusTooManyRequests, shared.CodeLimit, "--max-machines"},
		{fmt.Errorf("%w: no leader elected", state.ErrNoLeader), http.StatusServiceUnavailable, shared.CodeNoLeader, "rivet members ls"},
		{errors.Join(state.ErrNoLeader, state.ErrNotApplied), http.StatusServiceUnavailable, shared.CodeNoLeader, "rivet members ls"},
		{fmt.Errorf("%w: connection lost", state.ErrOutcomeUnknown), http.StatusServiceUnavailable, shared.CodeOutcomeUnknown, "rivet machines show"},
		{fmt.Errorf("%w: connection refused", state.ErrNotApplied), http.StatusServiceUnavailable, shared.CodeNotApplied, "retry"},
		{errors.New("disk on fire"), http.StatusInternalServerError, shared.CodeInternal, "log"},
		{shared.Errorf(http.StatusTeapot, "tea", "brew", "short and stout"), http.StatusTeapot, "tea", "brew"},
	}
	for _, tc := range cases {
		got := Answer(tc.err)
		if got.Status != tc.status || got.Code != tc.code || !strings.Contains(got.Hint, tc.hint) || got.Message == "" {
			t.Errorf("Answer(%v) = %+v; want %d %s with a hint containing %q", tc.err, got, tc.status, tc.code, tc.hint)
		}
	}
	r := &state.Rejected{Kind: state.KindConflict, Rule: state.RuleAction, Reason: "retire m-1: it is lost"}
	if got := Answer(fmt.Errorf("wrapped: %w", r)); got.Message != r.Reason {
		t.Errorf("a rejection's reason is its message: got %q", got.Message)
	}
}
