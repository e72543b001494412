// Package shared is Rivet's wire: what the agent, the coordinator and the CLI say to each
// other. It holds the API paths and the request and response types, the error envelope,
// machine identity and the lifecycle, inventory, roles, plans and step reports, the Serf tag
// schema, the kernel command-line keys, the version stamp and a typed API client.
//
// Every type that arrives from the network has Validate, and Decode rejects unknown fields
// and bodies over a stated limit, so a handler never sees a half-valid value. The package
// knows nothing of Raft, Serf, HTTP servers or ghw (a test enforces it).
package shared
