package fsm

import (
	"net/http"

	"github.com/rivetmetal/rivet/shared"
)

func internalErr(msg string) *shared.APIError {
	return &shared.APIError{Status: http.StatusInternalServerError, Code: shared.CodeInternal, Message: msg}
}
