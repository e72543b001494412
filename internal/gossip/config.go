package gossip

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// DefaultBindAddr is where a Serf node listens (UDP and TCP) unless told otherwise.
const DefaultBindAddr = "0.0.0.0:7946"

// Node is what differs between Serf nodes; everything else in the pool is the same for
// agents and coordinators alike.
type Node struct {
	Name          string
	Key           string // the pool key, base64 (see DecodeKey)
	BindAddr      string // host:port; DefaultBindAddr when empty; port 0 picks one
	AdvertiseAddr string // "ip" (the bind port is used) or "ip:port"; empty: memberlist picks
	// DeadNodeReclaim is how soon a dead member's name may rejoin from a new address;
	// default 30 s.
	DeadNodeReclaim time.Duration
	Logger          *slog.Logger
}

// SerfConfig is the Serf configuration of one node of Rivet's pool: LAN failure detection
// (memberlist.DefaultLANConfig), encryption enforced both ways, logs through slog.
func SerfConfig(n Node) (*serf.Config, error) {
	key, err := DecodeKey(n.Key)
	if err != nil {
		return nil, err
	}
	bind := n.BindAddr
	if bind == "" {
		bind = DefaultBindAddr
	}
	host, port, err := splitHostPort(bind)
	if err != nil {
		return nil, fmt.Errorf("gossip bind address %q: %w", bind, err)
	}
	ml := memberlist.DefaultLANConfig()
	ml.Name = n.Name
	ml.BindAddr, ml.BindPort, ml.AdvertisePort = host, port, port
	if n.AdvertiseAddr != "" {
		if ml.AdvertiseAddr, ml.AdvertisePort, err = splitAdvertise(n.AdvertiseAddr, port); err != nil {
			return nil, err
		}
	}
	ml.SecretKey = key
	ml.GossipVerifyIncoming, ml.GossipVerifyOutgoing = true, true
	ml.DeadNodeReclaimTime = n.DeadNodeReclaim
	if ml.DeadNodeReclaimTime == 0 {
		ml.DeadNodeReclaimTime = 30 * time.Second
	}
	logger := n.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// "lib", not the callers' own "component" or "subsystem": a key a caller has already
	// set (component=gossip) would show twice.
	ml.Logger = Logger(logger.With("lib", "memberlist"))

	conf := serf.DefaultConfig()
	conf.NodeName = n.Name
	conf.MemberlistConfig = ml
	conf.Logger = Logger(logger.With("lib", "serf"))
	conf.LogOutput = nil
	return conf, nil
}

func splitHostPort(hostport string) (string, int, error) {
	host, portText, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", portText)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// splitAdvertise accepts "ip" (the bind port is used) or "ip:port".
func splitAdvertise(addr string, bindPort int) (string, int, error) {
	if ip := net.ParseIP(addr); ip != nil {
		return ip.String(), bindPort, nil
	}
	host, port, err := splitHostPort(addr)
	if err != nil || net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("gossip advertise address %q: want an IP or ip:port", addr)
	}
	return host, port, nil
}
