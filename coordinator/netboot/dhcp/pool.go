package dhcp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Pool is the address range a full DHCP server hands out, with the options that go with
// an address. It is meant for isolated lab networks; leases live in memory only, and a
// client that renews an address the server forgot (after a restart) gets it back if it
// is still free.
type Pool struct {
	Start, End net.IP        // inclusive range, inside the server's subnet
	Netmask    net.IPMask    // default 255.255.255.0
	Router     net.IP        // option 3; none if nil
	DNS        []net.IP      // option 6
	DomainName string        // option 15
	LeaseTime  time.Duration // option 51; default 1 h
}

const (
	defaultLeaseTime = time.Hour
	// offerHold is how long an offered address stays reserved for the client it was
	// offered to, waiting for its REQUEST.
	offerHold = 30 * time.Second
	// declineHold keeps an address that a client found in use (DHCPDECLINE) out of the
	// pool for a while: something on the segment has it without a lease.
	declineHold = 10 * time.Minute
	maxPoolSize = 1 << 16
)

// lease is one address bound to, or reserved for, one MAC.
type lease struct {
	mac     string // net.HardwareAddr.String(); "" for a declined address
	addr    uint32
	expires time.Time
	bound   bool // false while only offered
}

// leases is the in-memory lease table. Every address maps to at most one MAC and every
// MAC to at most one address. A MAC keeps its address after the lease runs out for as
// long as nobody else needs it, so a machine that comes back gets the same address.
type leases struct {
	mu     sync.Mutex
	first  uint32
	last   uint32
	byAddr map[uint32]*lease
	byMAC  map[string]*lease
	next   uint32 // where the search for a never-used address resumes
}

func newLeases(p Pool) (*leases, error) {
	start, ok1 := netip.AddrFromSlice(p.Start.To4())
	end, ok2 := netip.AddrFromSlice(p.End.To4())
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("pool: start %v and end %v must both be IPv4 addresses", p.Start, p.End)
	}
	first, last := u32(start), u32(end)
	if first > last {
		return nil, fmt.Errorf("pool: start %v is after end %v", p.Start, p.End)
	}
	if last-first+1 > maxPoolSize {
		return nil, fmt.Errorf("pool: %v-%v holds more than %d addresses; use a smaller range", p.Start, p.End, maxPoolSize)
	}
	return &leases{first: first, last: last, next: first,
		byAddr: map[uint32]*lease{}, byMAC: map[string]*lease{}}, nil
}

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func ipOf(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

func (l *leases) contains(ip net.IP) (uint32, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return 0, false
	}
	v := u32(a)
	return v, v >= l.first && v <= l.last
}

// offer reserves an address for mac: its current one if it has one, else the address it
// asked for if free, else a free one. It returns nil when the pool is exhausted.
func (l *leases) offer(mac string, requested net.IP, now time.Time) net.IP {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le := l.byMAC[mac]; le != nil {
		if !le.bound || le.expires.Before(now) {
			le.expires, le.bound = now.Add(offerHold), false
		}
		return ipOf(le.addr)
	}
	if v, ok := l.contains(requested); ok && l.freeLocked(v, now) {
		return ipOf(l.assignLocked(mac, v, now.Add(offerHold), false).addr)
	}
	v, ok := l.findFreeLocked(now)
	if !ok {
		return nil
	}
	return ipOf(l.assignLocked(mac, v, now.Add(offerHold), false).addr)
}

// bind confirms ip for mac for d. It succeeds when ip is mac's address, or when ip is in
// the pool and free (a client renewing a lease this server forgot). ok is false for an
// address that belongs to someone else; inPool tells whether the server should say NAK.
func (l *leases) bind(mac string, ip net.IP, d time.Duration, now time.Time) (ok, inPool bool) {
	v, inPool := l.contains(ip)
	if !inPool {
		return false, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	le := l.byMAC[mac]
	if le == nil || le.addr != v {
		if !l.freeLocked(v, now) {
			return false, true
		}
		le = l.assignLocked(mac, v, now, false)
	}
	le.expires, le.bound = now.Add(d), true
	return true, true
}

// release ends mac's lease on ip early; the MAC keeps its claim until someone else needs it.
func (l *leases) release(mac string, ip net.IP, now time.Time) {
	v, ok := l.contains(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	if le := l.byMAC[mac]; ok && le != nil && le.addr == v {
		le.expires, le.bound = now, false
	}
}

// forget drops mac's reservation when it chose another server's offer.
func (l *leases) forget(mac string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le := l.byMAC[mac]; le != nil && !le.bound {
		delete(l.byMAC, mac)
		delete(l.byAddr, le.addr)
	}
}

// decline takes ip out of service: a client found it already in use.
func (l *leases) decline(mac string, ip net.IP, now time.Time) {
	v, ok := l.contains(ip)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if le := l.byMAC[mac]; le != nil && le.addr == v {
		delete(l.byMAC, mac)
	}
	l.byAddr[v] = &lease{addr: v, expires: now.Add(declineHold)}
}

// lookup returns mac's address if it holds an unexpired lease.
func (l *leases) lookup(mac string, now time.Time) net.IP {
	l.mu.Lock()
	defer l.mu.Unlock()
	if le := l.byMAC[mac]; le != nil && le.bound && !le.expires.Before(now) {
		return ipOf(le.addr)
	}
	return nil
}

func (l *leases) freeLocked(v uint32, now time.Time) bool {
	le := l.byAddr[v]
	return le == nil || le.expires.Before(now)
}

func (l *leases) assignLocked(mac string, v uint32, expires time.Time, bound bool) *lease {
	if old := l.byAddr[v]; old != nil && old.mac != "" {
		delete(l.byMAC, old.mac) // an expired lease gives way; its MAC will get a new address
	}
	if old := l.byMAC[mac]; old != nil {
		delete(l.byAddr, old.addr)
	}
	le := &lease{mac: mac, addr: v, expires: expires, bound: bound}
	l.byAddr[v], l.byMAC[mac] = le, le
	return le
}

// findFreeLocked prefers addresses never handed out, so that expired leases stay with
// their MACs as long as possible; then it takes the lease that ran out longest ago.
func (l *leases) findFreeLocked(now time.Time) (uint32, bool) {
	size := l.last - l.first + 1
	for i := uint32(0); i < size; i++ {
		v := l.first + (l.next-l.first+i)%size
		if l.byAddr[v] == nil {
			l.next = l.first + (v-l.first+1)%size
			return v, true
		}
	}
	var oldest *lease
	for _, le := range l.byAddr {
		if le.expires.Before(now) && (oldest == nil || le.expires.Before(oldest.expires)) {
			oldest = le
		}
	}
	if oldest == nil {
		return 0, false
	}
	return oldest.addr, true
}
