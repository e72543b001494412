//go:build deps

// Package deps pins the modules Rivet is built from until real code imports them,
// so parallel work never races on go.mod. Deleted once every import is real.
package deps

import (
	_ "github.com/chromedp/chromedp"
	_ "github.com/creack/pty"
	_ "github.com/docker/docker/client"
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "github.com/hashicorp/serf/serf"
	_ "github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	_ "github.com/insomniacslk/dhcp/dhcpv4/server4"
	_ "github.com/jaypipes/ghw"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/shirou/gopsutil/v3/load"
	_ "github.com/vishvananda/netlink"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/sys/unix"
	_ "sigs.k8s.io/yaml"
)
