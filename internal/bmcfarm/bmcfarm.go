// Package bmcfarm runs a rack of IPMI 2.0 BMCs (RMCP+, what `ipmitool -I lanplus` and
// Rivet's IPMI driver speak) in one process, each on its own loopback UDP port with one
// administrator and an in-memory chassis (power, boot flags). The BMCs are go-ipmi's
// reference server (pkg/server), which answers a command in its own goroutine: unlike
// OpenIPMI's ipmi_sim (internal/ipmisim), which forks a shell script per chassis command,
// the farm does not become the bottleneck of a bench that switches 200 machines on.
//
// Start runs a farm in this process (tests of the farm itself). Serve and StartProcess
// are the two ends of a farm in a child process, for benches whose CPU figures must not
// count the BMCs' work: the child prints its ports and takes commands on stdin.
package bmcfarm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/server"
	"github.com/bougou/go-ipmi/pkg/transport/udp"
	"github.com/bougou/go-ipmi/pkg/types"
)

// Config is the farm to start.
type Config struct {
	BMCs     int    // how many BMCs; at least 1
	User     string // the one administrator of every BMC (at most 16 bytes)
	Password string // its password (at most 20 bytes); never logged
	Host     string // address to listen on; default 127.0.0.1
}

// Farm is a running rack of BMCs. Its methods are safe for concurrent use.
type Farm struct {
	bmcs   []*node
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// node is one BMC: its port, its chassis and the server answering on the port.
type node struct {
	port    int
	chassis *Chassis
	srv     *server.Server
}

// Start opens cfg.BMCs UDP ports and serves a BMC on each until Close.
func Start(cfg Config) (*Farm, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Farm{cancel: cancel}
	for i := range cfg.BMCs {
		n, err := newNode(cfg, i)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.bmcs = append(f.bmcs, n)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			_ = n.srv.Serve(ctx) // ends when Close closes the server's socket
		}()
	}
	return f, nil
}

func (c *Config) check() error {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	switch {
	case c.BMCs < 1:
		return fmt.Errorf("bmcfarm: %d BMCs: want at least 1", c.BMCs)
	case c.User == "" || len(c.User) > bmc.MaxUserNameLen:
		return fmt.Errorf("bmcfarm: user name of %d bytes: want 1-%d", len(c.User), bmc.MaxUserNameLen)
	case len(c.Password) > bmc.MaxPasswordLen:
		return fmt.Errorf("bmcfarm: password of %d bytes: want at most %d", len(c.Password), bmc.MaxPasswordLen)
	}
	return nil
}

// newNode makes BMC i: a chassis that starts powered off, the administrator in user
// slot 2 (slot 1 is IPMI's anonymous user) allowed on LAN channel 1, and a server on a
// free port that offers RMCP+ only, with cipher suites 3 (what operators pass as -C 3)
// and 17.
func newNode(cfg Config, i int) (*node, error) {
	ch := &Chassis{}
	var guid [16]byte
	copy(guid[:], fmt.Sprintf("rivet-farm-%05d", i))
	b := bmc.New(bmc.DeviceInfo{DeviceID: 0x20, DeviceRevision: 1, FirmwareMajor: 1, IPMIVersion: 0x20},
		guid, &farmHAL{chassis: ch},
		bmc.WithCipherSuites([]types.CipherSuiteID{types.CipherSuiteID3, types.CipherSuiteID17}),
		bmc.WithV15Disabled())
	u, err := b.Users.Add(2, cfg.User)
	if err != nil {
		return nil, fmt.Errorf("bmcfarm: BMC %d: add user: %w", i, err)
	}
	u.SetPassword([]byte(cfg.Password))
	u.Enabled = true
	u.ChannelAccess[1] = bmc.UserChannelAccess{MaxPrivilege: bmc.PrivilegeLevelAdministrator, Enabled: true}

	conn, err := udp.Listen(net.JoinHostPort(cfg.Host, "0"))
	if err != nil {
		return nil, fmt.Errorf("bmcfarm: BMC %d: %w (are file descriptors short? ulimit -n)", i, err)
	}
	return &node{
		port:    conn.LocalAddr().(*net.UDPAddr).Port,
		chassis: ch,
		srv:     server.NewServer(b, conn),
	}, nil
}

// Len is how many BMCs the farm has.
func (f *Farm) Len() int { return len(f.bmcs) }

// Ports are the BMCs' UDP ports, BMC 0 first.
func (f *Farm) Ports() []int {
	ports := make([]int, len(f.bmcs))
	for i, n := range f.bmcs {
		ports[i] = n.port
	}
	return ports
}

// Chassis is BMC i's chassis, to read or set its state behind the BMC's back (as a
// person at the machine would).
func (f *Farm) Chassis(i int) *Chassis { return f.bmcs[i].chassis }

// PowerStates is every BMC's power, BMC 0 first: true is on.
func (f *Farm) PowerStates() []bool {
	on := make([]bool, len(f.bmcs))
	for i, n := range f.bmcs {
		on[i] = n.chassis.IsOn()
	}
	return on
}

// SetAllPower switches every chassis on or off directly, not over IPMI.
func (f *Farm) SetAllPower(on bool) {
	for _, n := range f.bmcs {
		n.chassis.Set(on)
	}
}

// Close stops every BMC and waits for their servers to return.
func (f *Farm) Close() error {
	var errs []error
	f.once.Do(func() {
		f.cancel()
		for _, n := range f.bmcs {
			if err := n.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		f.wg.Wait()
	})
	return errors.Join(errs...)
}
