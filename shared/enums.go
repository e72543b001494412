package shared

import (
	"fmt"
	"slices"
	"strings"
)

// The small closed vocabularies of the wire. Each is a string type, so its JSON is the
// bare value it always was; Validate rejects anything else with the list of
// what is allowed.

// AgentMode is how an agent runs: from RAM after a network boot, or as a service on an
// installed OS.
type AgentMode string

const (
	ModeRAM     AgentMode = "ram"
	ModeService AgentMode = "service"
)

// AgentModes lists every agent mode.
var AgentModes = []AgentMode{ModeRAM, ModeService}

// Validate returns an error for an unknown mode.
func (m AgentMode) Validate() error { return validateEnum("mode", m, AgentModes) }

// TokenRole is what an operator or enrolment token may do.
type TokenRole string

const (
	TokenAdmin  TokenRole = "admin"  // reads and acts
	TokenViewer TokenRole = "viewer" // reads
	TokenEnrol  TokenRole = "enrol"  // registers machines, nothing else
)

// TokenRoles lists every token role.
var TokenRoles = []TokenRole{TokenAdmin, TokenViewer, TokenEnrol}

// Validate returns an error for an unknown role.
func (r TokenRole) Validate() error { return validateEnum("role", r, TokenRoles) }

// Action is an operator's action on a machine (the {action} of PathMachineAction).
type Action string

const (
	ActionRetry   Action = "retry"   // re-run the failed step
	ActionReplan  Action = "replan"  // forget the plan; match a role again
	ActionRelease Action = "release" // a retired machine becomes discovered again
	ActionRetire  Action = "retire"  // out of service; the boot services stay silent
	ActionApprove Action = "approve" // admit a discovered machine: it may get a role and the cluster's secrets
)

// Actions lists every operator action.
var Actions = []Action{ActionRetry, ActionReplan, ActionRelease, ActionRetire, ActionApprove}

// Validate returns an error for an unknown action.
func (a Action) Validate() error { return validateEnum("action", a, Actions) }

// HealthStatus is a coordinator's verdict on itself in Health.
type HealthStatus string

const (
	HealthOK       HealthStatus = "ok"
	HealthDegraded HealthStatus = "degraded" // no leader
)

// HealthStatuses lists every health status.
var HealthStatuses = []HealthStatus{HealthOK, HealthDegraded}

// Validate returns an error for an unknown status.
func (s HealthStatus) Validate() error { return validateEnum("health status", s, HealthStatuses) }

// validateEnum words every enum's error the same way: `mode "x": want ram or service`.
func validateEnum[T ~string](what string, v T, known []T) error {
	if slices.Contains(known, v) {
		return nil
	}
	words := make([]string, len(known))
	for i, k := range known {
		words[i] = string(k)
	}
	want := words[len(words)-1]
	if len(words) > 1 {
		want = strings.Join(words[:len(words)-1], ", ") + " or " + want
	}
	return fmt.Errorf("%s %q: want %s", what, v, want)
}
