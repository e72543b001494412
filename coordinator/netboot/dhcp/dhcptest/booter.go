package dhcptest

import (
	"net"
	"sync"

	"github.com/rivetmetal/rivet/shared"
)

// BooterID is the machine ID a Booter reports for the MACs it was given.
const BooterID shared.MachineID = "m-0123456789abcdef"

// Booter is a fake of the boot decision dhcp and netboot ask for (their Booter): a map
// from MAC to target, safe to change while a server asks; a MAC it was not given boots
// the agent, as an unknown machine does.
type Booter struct {
	mu sync.Mutex
	m  map[string]shared.BootTarget
}

// NewBooter returns a Booter with these targets, keyed by MAC as net.HardwareAddr
// prints it.
func NewBooter(targets map[string]shared.BootTarget) *Booter {
	m := map[string]shared.BootTarget{}
	for mac, t := range targets {
		m[mac] = t
	}
	return &Booter{m: m}
}

// Set changes the target of one MAC.
func (b *Booter) Set(mac string, t shared.BootTarget) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[mac] = t
}

// BootFor implements the Booter interface of dhcp and netboot.
func (b *Booter) BootFor(mac net.HardwareAddr) (shared.BootTarget, shared.MachineID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.m[mac.String()]; ok {
		return t, BooterID
	}
	return shared.BootAgent, ""
}
