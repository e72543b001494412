package shared

// Version is the one version stamp shared by rivet and rivet-agent. The Makefile sets it
// with -ldflags "-X github.com/rivetmetal/rivet/shared.Version=...".
var Version = "dev"

// Protocol is the newest replicated-state protocol this build speaks: which Raft command
// types it can apply. A cluster runs at the protocol its leader raised it to once every
// member spoke it (Health.ClusterProtocol); no coordinator writes a command newer than
// that, so an older member never meets one it cannot apply. Raise it by one whenever a
// release adds a command type (see docs/upgrades.md).
const Protocol = 2

// FirstProtocol is the protocol of a coordinator that does not say which it speaks: the
// first release (v0.1.0) and every cluster that was never raised.
const FirstProtocol = 1

// ProtocolOf reads a protocol a peer reported; a peer that reported none is at the first.
func ProtocolOf(reported int) int { return max(reported, FirstProtocol) }
