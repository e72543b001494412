package coordinator

import (
	"context"
	"net"
	"net/http"

	"github.com/rivetmetal/rivet/shared"
)

// BootFor implements netboot.Booter from the replicated state: an unknown MAC boots the
// agent; a known machine boots what its record says (the agent until its install step
// says disk; nothing once retired). Every MAC a machine registered answers the same, so
// iPXE trying its next NIC after "exit 1" never boots the agent by mistake.
func (s *Server) BootFor(mac net.HardwareAddr) (shared.BootTarget, shared.MachineID) {
	m, ok := s.store.MachineByMAC(mac)
	if !ok {
		return shared.BootAgent, ""
	}
	if m.State == shared.StateRetired {
		return shared.BootNone, m.ID
	}
	if m.Boot == "" {
		return shared.BootAgent, m.ID
	}
	return m.Boot, m.ID
}

// APIURLs lists every coordinator's API URL, for the agent's kernel command line.
func (s *Server) APIURLs() []string {
	var urls []string
	for _, c := range s.store.Coordinators() {
		if c.APIAddr != "" {
			urls = append(urls, "https://"+c.APIAddr)
		}
	}
	return urls
}

// AgentBoot implements api.AgentBooter with this coordinator's boot services.
func (s *Server) AgentBoot(ctx context.Context, mac net.HardwareAddr) (*shared.KexecAnswer, error) {
	boot := s.bootServices.Load()
	if boot == nil {
		return nil, shared.Errorf(http.StatusServiceUnavailable, shared.CodeInternal, "ask a coordinator on the machine's boot network",
			"this coordinator serves no boot services")
	}
	return boot.AgentBoot(ctx, mac)
}
