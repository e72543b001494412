package shared

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Re-provisioning takes a ready machine out of the Swarm without dropping its services
// and puts it through its role's plan again: drained until its tasks run elsewhere, a
// manager replaced by a promoted worker before it is demoted, removed from the Swarm
// with both join tokens rotated, then planned again (with an image of the operator's
// choice) and joined again. The leader drives it; every phase is on the timeline.

// ReprovisionPhase is where a re-provisioning stands.
type ReprovisionPhase string

const (
	// ReprovisionDrain: a manager sets the node to drain and waits until every service
	// runs its desired tasks on other nodes.
	ReprovisionDrain ReprovisionPhase = "drain"
	// ReprovisionReplace: the node is a manager; a ready worker (in a failure domain
	// without a manager, when there is one) is promoted first, so the number of
	// reachable managers never drops.
	ReprovisionReplace ReprovisionPhase = "replace"
	// ReprovisionLeave: a manager demotes the node if need be, removes it and rotates
	// both join tokens, so the old OS cannot join again.
	ReprovisionLeave ReprovisionPhase = "leave"
	// ReprovisionReinstall: the machine is planned again (a manager as a manager) and runs
	// its plan; the phase ends when it is ready.
	ReprovisionReinstall ReprovisionPhase = "reinstall"
	// ReprovisionRestore: a manager is back; its stand-in is demoted again, so the
	// managers are the ones placed before (over the failure domains) and their number is
	// what it was.
	ReprovisionRestore ReprovisionPhase = "restore"
)

// ReprovisionVia is how an installed machine boots the Rivet agent for its new image.
type ReprovisionVia string

const (
	// ViaKexec: its installed agent kexecs into the agent's kernel and initramfs (no
	// firmware POST, no BMC needed); if the kernel cannot kexec, it reboots through the
	// firmware, which network-boots the agent.
	ViaKexec ReprovisionVia = "kexec"
	// ViaBMC: the leader power-cycles it through its BMC with PXE once.
	ViaBMC ReprovisionVia = "bmc"
)

// Valid reports whether v is known ("" is kexec).
func (v ReprovisionVia) Valid() bool { return v == "" || v == ViaKexec || v == ViaBMC }

// Reprovision is a machine's re-provisioning in progress.
type Reprovision struct {
	Phase ReprovisionPhase `json:"phase"`
	// Image replaces the role's image for this machine's next plan; nil: the role's.
	Image  *ImageSpec `json:"image,omitempty"`
	By     string     `json:"by,omitempty"`
	Reason string     `json:"reason,omitempty"`
	// Started is when it began, PhaseAt when the current phase began.
	Started time.Time `json:"started"`
	PhaseAt time.Time `json:"phase_at"`
	// Manager: the machine was a swarm manager; it is planned as one again.
	Manager bool `json:"manager,omitempty"`
	// NoStandIn: the operator allowed the swarm one manager fewer meanwhile.
	NoStandIn bool `json:"no_stand_in,omitempty"`
	// Via is how it boots the agent for a new image ("": kexec).
	Via ReprovisionVia `json:"via,omitempty"`
	// StandIn is the worker promoted in its place, demoted again once it is back.
	StandIn MachineID `json:"stand_in,omitempty"`
	// LeftNode is the swarm node id the machine had: its next swarm step makes the local
	// engine leave that node's swarm state before it joins as a new node.
	LeftNode string `json:"left_node,omitempty"`
}

// ReprovisionRequest asks for a machine to be re-provisioned.
type ReprovisionRequest struct {
	Reason string     `json:"reason,omitempty"`
	Image  *ImageSpec `json:"image,omitempty"`
	// AllowFewerManagers lets a manager go without a stand-in when no worker can be
	// promoted (a small swarm of managers only): the swarm has one manager fewer until
	// it is back. Its quorum holds only while no other manager fails meanwhile.
	AllowFewerManagers bool `json:"allow_fewer_managers,omitempty"`
	// Via is how the installed machine boots the agent for its new image ("": kexec).
	Via ReprovisionVia `json:"via,omitempty"`
}

// Validate checks the request.
func (r *ReprovisionRequest) Validate() error {
	if len(r.Reason) > 1024 {
		return fmt.Errorf("reason too long")
	}
	if !r.Via.Valid() {
		return fmt.Errorf("via %q: want kexec or bmc", r.Via)
	}
	if r.Image != nil {
		if err := r.Image.Validate(); err != nil {
			return fmt.Errorf("image: %w", err)
		}
	}
	return nil
}

// Reprovision asks the coordinator to re-provision machine id.
func (c *Client) Reprovision(ctx context.Context, id MachineID, r *ReprovisionRequest) (*Machine, error) {
	var m Machine
	return &m, c.Do(ctx, http.MethodPost, MachinePath(PathMachineReprovision, id), r, &m)
}
