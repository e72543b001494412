package netboot

import (
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// transferListener returns what the TFTP server should use to open one socket per
// transfer when Run was called on a thread locked into another network namespace than
// the process's (as the lab and the tests do). Transfers run on arbitrary goroutines,
// whose threads are in the process's namespace; their sockets must be opened in Run's.
// It returns nil when both namespaces are the same, and a closer for the namespace handle.
func transferListener() (func(net.Addr) (net.PacketConn, error), func(), error) {
	here, err1 := os.Readlink("/proc/thread-self/ns/net")
	// The namespace every unlocked thread is in. Not /proc/self: that is the main
	// thread's, and a goroutine locked into another namespace may run on the main thread.
	elsewhere := make(chan string, 1)
	go func() { ns, _ := os.Readlink("/proc/thread-self/ns/net"); elsewhere <- ns }()
	common := <-elsewhere
	if err1 != nil || common == "" || here == common {
		return nil, func() {}, nil
	}
	ns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, nil, fmt.Errorf("netboot: open this thread's network namespace: %w", err)
	}
	listen := func(listener net.Addr) (net.PacketConn, error) {
		ip := net.IPv4zero
		if u, ok := listener.(*net.UDPAddr); ok {
			ip = u.IP
		}
		var pc net.PacketConn
		err := inNamespace(ns, func() (err error) {
			pc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
			return err
		})
		return pc, err
	}
	return listen, func() { ns.Close() }, nil
}

// inNamespace runs fn on a thread locked to a new goroutine that has entered ns. The
// thread is never unlocked, so Go ends it afterwards instead of reusing it elsewhere. It
// may be one that forked a child earlier: a Pdeathsig child must be forked from a thread
// that stays locked for the child's life (testenv.StartTied).
func inNamespace(ns *os.File, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
