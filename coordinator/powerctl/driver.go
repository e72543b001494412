package powerctl

import (
	"fmt"
	"net"
	"strconv"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/shared"
)

// DriverOptions tune the drivers driverFor builds, for every BMC alike.
type DriverOptions struct {
	// IPMICipherSuite is the RMCP+ cipher suite IPMI sessions open with; 0 asks each BMC
	// and tries what it offers, best first (slow against BMCs that offer suites they
	// cannot do, such as ipmi_sim: give it 3). --ipmi-cipher-suite.
	IPMICipherSuite int
}

// driverFor builds the power driver of one BMC row. It is the one place a shared.BMC
// becomes a power.Driver: the Manager's Drivers defaults to it.
func driverFor(b shared.BMC, o DriverOptions) (power.Driver, error) {
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
		return power.NewIPMI(power.IPMIConfig{Host: host, Port: port, User: b.User, Password: b.Password,
			CipherSuite: o.IPMICipherSuite})
	case shared.BMCRedfish:
		return power.NewRedfish(power.RedfishConfig{Endpoint: b.Address, User: b.User,
			Password: b.Password, TLSSHA256: b.TLSSHA256})
	case "":
		return nil, ErrNoBMC
	}
	return nil, fmt.Errorf("power: BMC %s: unknown driver %q (want ipmi or redfish)", b, b.Driver)
}
