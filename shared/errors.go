package shared

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrorBody is the one error envelope every API error uses:
//
//	{"error": {"code": "not_found", "message": "...", "hint": "..."}}
type ErrorBody struct {
	Error APIError `json:"error"`
}

// APIError is a failed API call. Hint says what the caller can do next.
type APIError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// Error codes: one per HTTP status family Rivet uses, and a few that tell a caller what
// to do when the status alone cannot.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeTooLarge     = "too_large"
	CodeNoLeader     = "no_leader"
	CodeInternal     = "internal"

	// CodeSwarmPending, with 409: the first manager is still creating the swarm; the
	// caller waits and asks again, it has done nothing wrong.
	CodeSwarmPending = "swarm_pending"
	// CodeRateLimited, with 429: too many progress reports for one step; this one was
	// dropped, nothing changed, and the next one will be taken.
	CodeRateLimited = "rate_limited"
	// CodeOutcomeUnknown, with 503: the write was in flight when leadership changed or
	// the leader was lost; it may or may not have been applied. Read, then retry only if
	// it is missing: clients never resend it blindly.
	CodeOutcomeUnknown = "outcome_unknown"
	// CodeNotApplied, with 503: the write certainly did not reach the log (the leader
	// could not be reached before it was sent); nothing changed, sending it again is safe.
	CodeNotApplied = "not_applied"
	// CodeIdentityConflict, with 409: a registration claimed a machine id or a MAC that
	// belongs to another machine without that machine's token. Nothing changed; the
	// claim is on the owner's timeline for the operator to judge.
	CodeIdentityConflict = "identity_conflict"
	// CodeLimit, with 429: a configured limit (registrations per token, --max-machines)
	// was reached; the message names it. Nothing changed.
	CodeLimit = "limit"
)

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// Errorf builds an APIError.
func Errorf(status int, code, hint, format string, args ...any) *APIError {
	return &APIError{Status: status, Code: code, Message: fmt.Sprintf(format, args...), Hint: hint}
}

// BadRequest is an APIError for input that failed to decode or validate.
func BadRequest(err error) *APIError {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr
	}
	return &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: err.Error()}
}

// CodeOf returns the error code of err, "" when it is not an APIError.
func CodeOf(err error) string {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code
	}
	return ""
}

// StatusOf returns the HTTP status of err, 0 when it is not an APIError.
func StatusOf(err error) int {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status
	}
	return 0
}
