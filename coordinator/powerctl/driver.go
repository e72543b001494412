package powerctl

import (
	"fmt"
	"net"
	"strconv"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/shared"
)

// driverFor builds the power driver of one BMC row. It is the one place a shared.BMC
// becomes a power.Driver: the Manager's Drivers defaults to it.
func driverFor(b shared.BMC) (power.Driver, error) {
	switch b.Driver {
	case shared.BMCIPMI:
		host, port := b.Address, 0
		if h, p, err := net.SplitHostPort(b.Address); err == nil {
			n, err := strconv.Atoi(p)
			if err != nil {
				return nil, fmt.Errorf("power: BMC %s: port %q is not a number", b, p)
			}
			host, port = h, n
		}
		return power.NewIPMI(power.IPMIConfig{Host: host, Port: port, User: b.User, Password: b.Password})
	case shared.BMCRedfish:
		// MERGE(lead): the Redfish driver's constructor goes here, once coordinator/power
		// has it (the other helper's branch):
		//	return power.NewRedfish(power.RedfishConfig{Endpoint: b.Address, User: b.User,
		//		Password: b.Password, TLSSHA256: b.TLSSHA256})
		return nil, fmt.Errorf("power: BMC %s: the Redfish driver is not wired into powerctl.driverFor", b)
	case "":
		return nil, ErrNoBMC
	}
	return nil, fmt.Errorf("power: BMC %s: unknown driver %q (want ipmi or redfish)", b, b.Driver)
}
