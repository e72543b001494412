package shared

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// BMCDriver is how a machine's BMC is spoken to.
type BMCDriver string

const (
	BMCIPMI    BMCDriver = "ipmi"    // IPMI 2.0 over the LAN (RMCP+, "lanplus")
	BMCRedfish BMCDriver = "redfish" // DMTF Redfish over HTTPS
)

// BMC is how to reach one machine's baseboard management controller. It is a row of the
// operator's import: the password is named there by reference (a file or an environment
// variable of the operator's shell, never a command-line argument) and the CLI resolves
// the reference before it sends the row over the API's TLS. The coordinator seals the
// password before it enters the Raft log, and no API answer, page, event or log carries it:
// Redacted is what every reader outside the power path sees.
type BMC struct {
	Driver BMCDriver `json:"driver"`
	// Address is host or host:port for IPMI (port 623 by default) and an https:// URL
	// (or host[:port]) of the Redfish service root's host for Redfish.
	Address string `json:"address"`
	User    string `json:"user"`
	// Password travels only in an import request, resolved from the references below.
	Password string `json:"password,omitempty"`
	// PasswordFile and PasswordEnv are the import file's references to the password;
	// the CLI reads them and never sends them on.
	PasswordFile string `json:"password_file,omitempty"`
	PasswordEnv  string `json:"password_env,omitempty"`
	// TLSSHA256 pins a Redfish BMC's certificate (hex SHA-256 of its DER): BMCs ship
	// self-signed certificates, so pinning is how the operator says which one is real.
	TLSSHA256 string `json:"tls_sha256,omitempty"`
	// HasPassword is set in answers instead of the password.
	HasPassword bool `json:"has_password,omitempty"`
}

// Redacted is the BMC as answers show it: no password, no reference to one.
func (b BMC) Redacted() BMC {
	b.HasPassword = b.HasPassword || b.Password != ""
	b.Password, b.PasswordFile, b.PasswordEnv = "", "", ""
	return b
}

// String describes the BMC without its password.
func (b BMC) String() string {
	return fmt.Sprintf("%s %s@%s", b.Driver, b.User, b.Address)
}

// Validate checks the row's BMC as the coordinator receives it: a known driver, an
// address that driver can use, a user, and a resolved password. An error is a
// *FieldError naming the BMC's field (driver, address, user, password, tls_sha256).
func (b *BMC) Validate() error {
	switch b.Driver {
	case BMCIPMI:
		host := b.Address
		if h, _, err := net.SplitHostPort(b.Address); err == nil {
			host = h
		}
		if host == "" || strings.ContainsAny(host, "/ \t\n") {
			return fieldErrorf("address", "bmc address %q: want host or host:port of the BMC's IPMI LAN interface", b.Address)
		}
	case BMCRedfish:
		u, err := url.Parse(b.Address)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fieldErrorf("address", "bmc address %q: want https://host[:port] of the Redfish service", b.Address)
		}
	default:
		return fieldErrorf("driver", "bmc driver %q: want ipmi or redfish", b.Driver)
	}
	if b.User == "" || len(b.User) > 64 || strings.ContainsAny(b.User, "\x00\n\r") {
		return fieldErrorf("user", "bmc user: want the BMC account's name (at most 64 bytes)")
	}
	if b.PasswordFile != "" || b.PasswordEnv != "" {
		return fieldErrorf("password_file", "bmc password_file/password_env are read by the CLI and must not reach the coordinator")
	}
	if b.Password == "" || len(b.Password) > MaxBMCPassword {
		return fieldErrorf("password", "bmc password: give password_file or password_env (at most %d bytes)", MaxBMCPassword)
	}
	if b.TLSSHA256 != "" && (b.Driver != BMCRedfish || len(b.TLSSHA256) != 64 || strings.Trim(strings.ToLower(b.TLSSHA256), "0123456789abcdef") != "") {
		return fieldErrorf("tls_sha256", "bmc tls_sha256: want 64 hex digits, for a redfish BMC only")
	}
	return nil
}

// MaxBMCPassword bounds a BMC password (IPMI 2.0 allows 20 bytes; Redfish BMCs more).
const MaxBMCPassword = 128
