// Package redfishbmc is a small DMTF Redfish service: the service root, one
// ComputerSystem with its PowerState, one-time boot override and the
// ComputerSystem.Reset action, over HTTPS with a self-signed certificate it makes, and
// HTTP basic auth for one user. Behind it is a Chassis: a machine in memory, or one that
// Rivet drives some other way (a qemu VM in the lab). It is what Rivet's Redfish power
// driver is tested against, and a BMC for the lab's VMs.
package redfishbmc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config is one BMC.
type Config struct {
	// Addr is the address to listen on; default 127.0.0.1:0 (a free loopback port).
	Addr     string
	User     string
	Password string
	// SystemID is the ComputerSystem's Id (its URL's last segment); default "1".
	SystemID string
	Chassis  Chassis
	// ResetTypes are the ComputerSystem.Reset types offered (a subset of On, ForceOn,
	// ForceOff, GracefulShutdown, ForceRestart, PowerCycle), to play a BMC that lacks
	// some; default all of them.
	ResetTypes []string
	// ActionTimeout bounds one action on the chassis (a graceful shutdown of a qemu VM
	// waits for it); default 2 min.
	ActionTimeout time.Duration
	Logger        *slog.Logger
}

// BMC is a running Redfish service. New listens; Serve answers.
type BMC struct {
	cfg Config
	log *slog.Logger
	ln  net.Listener
	srv *http.Server
	fp  string
	pem []byte

	mu          sync.Mutex // the boot override, and one chassis action at a time
	bootTarget  string     // BootSourceOverrideTarget: "None", BootPxe, BootHdd
	bootEnabled string     // BootSourceOverrideEnabled: "Disabled" or "Once"
}

// New makes the BMC's certificate and listens on cfg.Addr; call Serve to answer.
func New(cfg Config) (*BMC, error) {
	if cfg.User == "" || cfg.Password == "" || cfg.Chassis == nil {
		return nil, errors.New("redfishbmc: a BMC needs User, Password and Chassis")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.SystemID == "" {
		cfg.SystemID = "1"
	}
	if cfg.ResetTypes == nil {
		cfg.ResetTypes = resetTypes
	}
	for _, rt := range cfg.ResetTypes {
		if !slices.Contains(resetTypes, rt) {
			return nil, fmt.Errorf("redfishbmc: reset type %q: want some of %s", rt, strings.Join(resetTypes, ", "))
		}
	}
	if cfg.ActionTimeout <= 0 {
		cfg.ActionTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("redfishbmc: %w", err)
	}
	cert, err := selfSigned(ln.Addr().(*net.TCPAddr).IP)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("redfishbmc: making the certificate: %w", err)
	}
	sum := sha256.Sum256(cert.Certificate[0])
	b := &BMC{cfg: cfg, ln: ln, fp: hex.EncodeToString(sum[:]), bootTarget: "None", bootEnabled: "Disabled",
		pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})}
	b.log = cfg.Logger.With("bmc", ln.Addr().String())
	b.srv = &http.Server{
		Handler:           b,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
	return b, nil
}

// selfSigned makes an ECDSA certificate for localhost and ip, valid for a year, as a
// BMC's factory certificate is: nobody vouches for it, clients pin it.
func selfSigned(ip net.IP) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
		ips = append(ips, ip)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "redfishbmc", Organization: []string{"Rivet lab BMC"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Serve answers until Close; it returns nil then.
func (b *BMC) Serve() error {
	err := b.srv.ServeTLS(b.ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Addr is the host:port the BMC listens on.
func (b *BMC) Addr() string { return b.ln.Addr().String() }

// URL is the service's base: https://host:port, what Rivet's BMC address is.
func (b *BMC) URL() string { return "https://" + b.Addr() }

// Fingerprint is the hex SHA-256 of the BMC's certificate (DER), what a client pins.
func (b *BMC) Fingerprint() string { return b.fp }

// CertificatePEM is the BMC's certificate, for a client that trusts it as its own root
// (curl --cacert) rather than by its fingerprint.
func (b *BMC) CertificatePEM() []byte { return b.pem }

// SystemPath is the ComputerSystem's URL path.
func (b *BMC) SystemPath() string { return "/redfish/v1/Systems/" + b.cfg.SystemID }

// Close stops answering and closes open connections.
func (b *BMC) Close() error {
	err := b.srv.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// actionContext bounds one chassis action; it does not end with the request, so that a
// client that gives up does not leave the machine half-switched.
func (b *BMC) actionContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), b.cfg.ActionTimeout)
}
