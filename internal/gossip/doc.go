// Package gossip holds what both sides of Rivet's Serf pool must agree on: the key
// format, the Serf and memberlist settings, the query names, and the bridge from Serf's
// logger to slog. The agent and the coordinator each keep their own membership package;
// this is their common ground.
package gossip

// QueryPlanChanged is the Serf query a coordinator sends one agent when its plan changed,
// so the agent fetches it now rather than at its next poll.
const QueryPlanChanged = "rivet-plan-changed"
