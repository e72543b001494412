// Package raftlink is the coordinators' Raft transport: a raft.StreamLayer over mutual
// TLS with the cluster CA. Both ends present their node certificate; a peer whose
// certificate does not chain to the cluster CA, or whose node id (from the certificate's
// URI SAN) is not a member, is refused during the handshake, before any Raft RPC is read.
package raftlink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rivetmetal/rivet/coordinator/pki"
)

// Config configures a Layer.
type Config struct {
	Listen    string   // listen address, e.g. "10.0.0.5:7400"
	Advertise net.Addr // the address peers dial; the listener's when nil
	// Certificate is this node's current certificate (it renews: pki.Renewing.Get).
	Certificate func() (*tls.Certificate, error)
	Roots       *x509.CertPool // the cluster CA
	// Member says whether a peer's node id may talk Raft with us.
	Member func(id string) bool
	// Refused hears of every refused handshake with a short reason (metrics).
	Refused func(reason string)
	Logger  *slog.Logger
	// HandshakeTimeout bounds a handshake; default 5 s.
	HandshakeTimeout time.Duration
}

// Layer is a raft.StreamLayer whose connections are authenticated both ways.
type Layer struct {
	cfg    Config
	ln     net.Listener
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

var _ raft.StreamLayer = (*Layer)(nil)

// Listen opens the listener; handshakes run as connections arrive.
func Listen(cfg Config) (*Layer, error) {
	if cfg.Certificate == nil || cfg.Roots == nil || cfg.Member == nil {
		return nil, errors.New("raftlink: Certificate, Roots and Member are required")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Refused == nil {
		cfg.Refused = func(string) {}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	l := &Layer{cfg: cfg, ln: ln, addr: cfg.Advertise, conns: make(chan net.Conn), closed: make(chan struct{})}
	if l.addr == nil {
		l.addr = ln.Addr()
	}
	if tcp, ok := l.addr.(*net.TCPAddr); ok {
		if tcp.IP.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("raftlink: advertise address %s is not one peers can dial", l.addr)
		}
		if tcp.Port == 0 { // listening on port 0: advertise the port we got
			l.addr = &net.TCPAddr{IP: tcp.IP, Port: ln.Addr().(*net.TCPAddr).Port}
		}
	}
	go l.acceptLoop()
	return l, nil
}

func (l *Layer) acceptLoop() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.cfg.Logger.Warn("raft listener stopped", "err", err)
			l.Close()
			return
		}
		go l.handshake(c)
	}
}

// handshake authenticates an incoming connection and hands it to Raft only if it passes.
func (l *Layer) handshake(c net.Conn) {
	tc := tls.Server(c, l.serverConfig())
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		l.refuse(c.RemoteAddr(), err)
		tc.Close()
		return
	}
	select {
	case l.conns <- tc:
	case <-l.closed:
		tc.Close()
	}
}

func (l *Layer) refuse(from net.Addr, err error) {
	reason := "handshake"
	var re *refusal
	if errors.As(err, &re) {
		reason = re.reason
	}
	l.cfg.Refused(reason)
	l.cfg.Logger.Warn("refused a raft connection", "from", from.String(), "reason", reason, "err", err)
}

// refusal is a peer that completed the TLS exchange but is not one of us.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }

// Accept returns the next authenticated connection.
func (l *Layer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops the listener. Connections already accepted stay open (Raft closes them).
func (l *Layer) Close() error {
	var err error
	l.once.Do(func() {
		close(l.closed)
		err = l.ln.Close()
	})
	return err
}

// Addr is the address peers dial.
func (l *Layer) Addr() net.Addr { return l.addr }

// Dial connects to a peer and authenticates it as a member before Raft writes to it.
func (l *Layer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: l.clientConfig()}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		var re *refusal
		if errors.As(err, &re) {
			l.cfg.Refused(re.reason)
		}
		return nil, fmt.Errorf("raft link to %s: %w", address, err)
	}
	return c, nil
}

// Suites are the TLS 1.2 cipher suites coordinators accept: ECDHE with an AEAD only.
// TLS 1.3 (preferred, and chosen whenever both ends speak it) has only AEAD suites.
var Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

func (l *Layer) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: Suites,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    l.cfg.Roots,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return l.cfg.Certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return l.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
		},
	}
}

func (l *Layer) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: Suites,
		// The peer is checked against the cluster CA and by node id in VerifyConnection:
		// a Raft address is often an IP the certificate need not name.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return l.cfg.Certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return l.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
		},
	}
}

// verifyPeer accepts a chain that verifies against the cluster CA and names a member.
func (l *Layer) verifyPeer(chain []*x509.Certificate, usage x509.ExtKeyUsage) error {
	id, err := VerifyNode(chain, l.cfg.Roots, usage)
	if err != nil {
		return &refusal{reason: "certificate", err: err}
	}
	if !l.cfg.Member(id) {
		return &refusal{reason: "not a member", err: fmt.Errorf("coordinator %q is not in the Raft configuration", id)}
	}
	return nil
}

// VerifyNode checks that chain[0] is a node certificate issued by the CA in roots for
// usage and returns the node id it names.
func VerifyNode(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("the peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", fmt.Errorf("the peer's certificate is not from the cluster CA: %w", err)
	}
	id := pki.NodeID(chain[0])
	if id == "" {
		return "", errors.New("the peer's certificate names no coordinator")
	}
	return id, nil
}
