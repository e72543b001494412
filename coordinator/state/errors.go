package state

import (
	"errors"
	"fmt"
)

// The write path's errors. A write fails in one of four ways, and the caller (an API
// handler, the leader loop) needs to know which, because each asks for a different next
// step:
//
//   - *Rejected: the state machine refused the command by one of its rules. It was
//     applied to the log and changed nothing (but, for an identity conflict, the owner's
//     timeline). Sending it again gets the same refusal.
//   - ErrNotApplied: the command certainly did not reach the log (no leader yet, the
//     leader could not be reached before the request went out). Safe to send again.
//   - ErrOutcomeUnknown: the command may or may not have been committed (leadership
//     lost mid-commit, the connection to the leader lost after the request went out).
//     Never resend blindly: read the object back first.
//   - ErrNoLeader: there is no leader to take the write now; nothing was applied.
//
// HTTP statuses and operator hints are not chosen here: coordinator/api maps these
// errors to the wire (api.Answer).

// Sentinel errors; wrap them with %w to add the cause.
var (
	ErrNotApplied     = errors.New("the write was not applied")
	ErrOutcomeUnknown = errors.New("the write may or may not have been applied")
	ErrNoLeader       = errors.New("the cluster has no leader to accept the write")
)

// Rejected is a command the state machine refused by one of its rules. Nothing changed
// but what the rule records (an identity conflict on the owner's timeline). It crosses
// Raft's Apply response and the forwarding wire as is.
type Rejected struct {
	// Kind is what sort of refusal it is: the API answers its HTTP status by it.
	Kind Kind `json:"kind"`
	// Rule is the check that refused: the API picks the operator's hint by it.
	Rule Rule `json:"rule"`
	// Reason says what happened, in words, for the operator.
	Reason string `json:"reason"`
	// Subject is the machine, role or token the rule is about, if any.
	Subject string `json:"subject,omitempty"`
}

func (r *Rejected) Error() string { return r.Reason }

// Is makes errors.Is compare rejections by value: one that crossed the wire is the
// same rejection.
func (r *Rejected) Is(target error) bool {
	t, ok := target.(*Rejected)
	return ok && t != nil && *t == *r
}

// reject builds a Rejected.
func reject(kind Kind, rule Rule, subject, format string, args ...any) *Rejected {
	return &Rejected{Kind: kind, Rule: rule, Subject: subject, Reason: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of refusal err carries, "" when it is not a *Rejected.
func KindOf(err error) Kind {
	if r, ok := errors.AsType[*Rejected](err); ok {
		return r.Kind
	}
	return ""
}

// Kind is what sort of rule refused a command.
type Kind string

// The kinds of refusal.
const (
	KindInvalid      Kind = "invalid"      // the command is malformed for the state it meets
	KindUnauthorized Kind = "unauthorized" // a credential the state does not know (a spent ticket)
	KindForbidden    Kind = "forbidden"    // the caller may not do this
	KindNotFound     Kind = "not_found"    // the subject does not exist
	KindConflict     Kind = "conflict"     // the subject's state does not allow it now
	// KindIdentity: a registration claimed another machine's id or MAC without proof.
	KindIdentity Kind = "identity_conflict"
	// KindPending: a precondition others are working on (the swarm being created):
	// the caller waits and asks again.
	KindPending Kind = "pending"
	KindLimit   Kind = "limit" // a configured limit was reached (--max-machines)
)

// Rule names the rule that refused a command: a stable identifier the API picks the
// operator's hint by. Reason says what happened in words; Rule says which check said so.
type Rule string

// The rules.
const (
	RuleMachineUnknown     Rule = "machine_unknown"
	RuleRoleUnknown        Rule = "role_unknown"
	RuleTokenUnknown       Rule = "token_unknown"
	RuleTokenNameTaken     Rule = "token_name_taken"
	RulePlanOnlyDiscovered Rule = "plan_only_discovered"
	RulePlanNotAdmitted    Rule = "plan_not_admitted"
	RuleReportGeneration   Rule = "report_generation"
	RuleReportStep         Rule = "report_step"
	RuleReportFinished     Rule = "report_finished"
	RuleAction             Rule = "action"
	RuleTicket             Rule = "ticket"
	RuleTicketMAC          Rule = "ticket_mac"
	RuleRetired            Rule = "retired"
	RuleIdentityID         Rule = "identity_id"
	RuleIdentityMAC        Rule = "identity_mac"
	RuleMaxMachines        Rule = "max_machines"
	RuleSwarmNotDue        Rule = "swarm_not_due"
	RuleSwarmPending       Rule = "swarm_pending"      // Subject: the designated creator, or ""
	RuleSwarmReportEarly   Rule = "swarm_report_early" // a manager's report before the swarm exists
	RuleSwarmOther         Rule = "swarm_other"        // the node is in another swarm
	RuleSwarmOwnPart       Rule = "swarm_own_part"     // a machine reports only its own part
	RuleSwarmCreatorOnly   Rule = "swarm_creator_only" // replayed: only the creator reports tokens
	RuleSwarmAddrNoID      Rule = "swarm_addr_without_id"
	RuleSwarmManagerLimit  Rule = "swarm_manager_limit"
	RuleNoBMC              Rule = "no_bmc"           // the power path: no BMC known for the target
	RuleLabels             Rule = "labels"           // a label change the target cannot take
	RuleNothingSelected    Rule = "nothing_selected" // a selector that matches nothing
)
