package power

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	ipmi "github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"
)

// IPMIConfig is how to reach one machine's BMC over IPMI 2.0 (RMCP+, "lanplus"). The
// password is held in memory only: String, GoString and LogValue redact it, and no error
// of the driver contains it.
type IPMIConfig struct {
	Host     string
	Port     int    // default 623
	User     string // an operator or administrator on the BMC
	Password string
	// Timeout bounds one exchange with the BMC (one datagram and its answer); default 5 s.
	Timeout time.Duration
	// Attempts is how often an action is tried when the BMC does not answer in time,
	// with a backoff between tries; default 3. Other failures (a refused login, a
	// refused command) are not retried.
	Attempts int
	// CipherSuite is the RMCP+ cipher suite to open sessions with; 0 lets the driver
	// ask the BMC and try the suites it offers, best first. Against OpenIPMI's ipmi_sim
	// that works but is slow (suite 17 and its kin fail before 3 succeeds): give it 3.
	CipherSuite int
	// UEFI asks for a UEFI boot in the one-time boot flags instead of a legacy (BIOS) one.
	UEFI bool
	// PowerWait bounds how long On and the hard part of Off wait for the BMC to report
	// the new state; default 30 s.
	PowerWait time.Duration
	// SoftOffTimeout is how long Off gives the OS to shut down after the soft-off (an
	// ACPI power button press) before it cuts the power; default 60 s, and never more
	// than half the time the caller's context leaves.
	SoftOffTimeout time.Duration
	Logger         *slog.Logger
}

// Addr is the BMC's host:port, the name every error of the driver gives it.
func (c IPMIConfig) Addr() string {
	port := c.Port
	if port == 0 {
		port = 623
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port))
}

const redacted = "[redacted]"

// String describes the BMC without its password.
func (c IPMIConfig) String() string {
	return fmt.Sprintf("ipmi %s@%s password %s", c.User, c.Addr(), redacted)
}

// GoString is String, so that %#v does not print the password either.
func (c IPMIConfig) GoString() string { return c.String() }

// LogValue is the BMC for slog, without its password.
func (c IPMIConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("driver", "ipmi"),
		slog.String("bmc", c.Addr()),
		slog.String("user", c.User),
		slog.String("password", redacted),
	)
}

// Kinds of IPMI failure, for errors.Is on the driver's errors.
var (
	// ErrBMCUnreachable: the BMC did not answer (after every attempt).
	ErrBMCUnreachable = errors.New("BMC did not answer")
	// ErrBMCAuth: the BMC refused the login (user, password or privilege).
	ErrBMCAuth = errors.New("BMC refused the login")
	// ErrBMCCommand: the BMC answered but refused or failed the command.
	ErrBMCCommand = errors.New("BMC refused the command")
)

// IPMIError is every error the IPMI driver returns. It names the BMC, the action and
// what to check; its text never contains the password, and it does not wrap the IPMI
// library's error (whose text the driver cannot vouch for), only its redacted text.
type IPMIError struct {
	BMC    string // host:port
	Action string // "power on", "status", ...
	Kind   error  // ErrBMCUnreachable, ErrBMCAuth or ErrBMCCommand
	Detail string // what the IPMI library said, password removed
	Hint   string // what to check
}

func (e *IPMIError) Error() string {
	return fmt.Sprintf("power: IPMI BMC %s: %s: %v: %s; %s", e.BMC, e.Action, e.Kind, e.Detail, e.Hint)
}

// Is matches the error's kind.
func (e *IPMIError) Is(target error) bool { return target == e.Kind }

// IPMI is the power driver of one machine with an IPMI 2.0 BMC. Every action opens its
// own RMCP+ session and closes it, so a BMC restart between actions does not matter.
type IPMI struct {
	cfg IPMIConfig
	log *slog.Logger
	mu  sync.Mutex // one action at a time: BMCs limit sessions and serialise anyway
}

var _ Driver = (*IPMI)(nil)

// NewIPMI checks cfg and returns the BMC's driver. It does not contact the BMC.
func NewIPMI(cfg IPMIConfig) (*IPMI, error) {
	if cfg.Host == "" || cfg.User == "" {
		return nil, fmt.Errorf("power: an IPMI BMC needs Host and User (have %s)", cfg)
	}
	if cfg.Port == 0 {
		cfg.Port = 623
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("power: IPMI BMC port %d: want 1-65535", cfg.Port)
	}
	if cfg.CipherSuite < 0 || cfg.CipherSuite > 255 {
		return nil, fmt.Errorf("power: IPMI cipher suite %d: want 0-255", cfg.CipherSuite)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 3
	}
	if cfg.PowerWait <= 0 {
		cfg.PowerWait = 30 * time.Second
	}
	if cfg.SoftOffTimeout <= 0 {
		cfg.SoftOffTimeout = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &IPMI{cfg: cfg, log: cfg.Logger.With("bmc", cfg)}, nil
}

// Status reports whether the machine's power is on.
func (m *IPMI) Status(ctx context.Context) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	on, err := m.status(ctx)
	if err != nil {
		return "", err
	}
	if on {
		return StateOn, nil
	}
	return StateOff, nil
}

func (m *IPMI) status(ctx context.Context) (bool, error) {
	var on bool
	err := m.do(ctx, "power status", func(ctx context.Context, c *ipmi.Client) error {
		st, err := c.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		on = st.PowerIsOn
		return nil
	})
	return on, err
}

// On powers the machine on and returns once the BMC reports it on.
func (m *IPMI) On(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.setPower(ctx, true)
}

// Off asks the OS to shut down (chassis control soft-shutdown, the ACPI power button)
// and cuts the power (power down) if the BMC still reports it on after SoftOffTimeout, or
// at once if the BMC refuses the soft-off; it returns once the BMC reports it off.
func (m *IPMI) Off(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	on, err := m.status(ctx)
	if err != nil || !on {
		return err
	}
	err = m.control(ctx, "soft off", chassis.ChassisControlSoftShutdown)
	switch {
	case errors.Is(err, ErrBMCCommand):
		m.log.Info("ipmi: the BMC refused the soft-off; cutting the power", "err", err)
	case err != nil:
		return err
	default:
		soft := softOffWait(ctx, m.cfg.SoftOffTimeout)
		if _, err := m.waitPower(ctx, false, soft); err == nil {
			m.log.Info("ipmi: the OS shut down after the soft-off")
			return nil
		}
		m.log.Info("ipmi: still on after the soft-off; cutting the power", "waited", soft)
	}
	return m.setPower(ctx, false)
}

// softOffWait is how long Off waits for the OS after the soft-off: the configured time,
// but at most half of what ctx leaves, so that the hard power-off always has time.
func softOffWait(ctx context.Context, configured time.Duration) time.Duration {
	if deadline, ok := ctx.Deadline(); ok {
		return min(configured, time.Until(deadline)/2)
	}
	return configured
}

// setPower switches the power unless it is in the wanted state already, and returns once
// the BMC reports the new state. The read, the command and the first read-back share one
// session: against a quick BMC that is the whole action.
func (m *IPMI) setPower(ctx context.Context, on bool) error {
	action, control := "power off", chassis.ChassisControlPowerDown
	if on {
		action, control = "power on", chassis.ChassisControlPowerUp
	}
	var was, now bool
	err := m.do(ctx, action, func(ctx context.Context, c *ipmi.Client) error {
		st, err := c.GetChassisStatus(ctx)
		if err != nil {
			return err
		}
		if was, now = st.PowerIsOn, st.PowerIsOn; was == on {
			return nil
		}
		if _, err := c.ChassisControl(ctx, control); err != nil {
			return err
		}
		if st, err = c.GetChassisStatus(ctx); err == nil {
			now = st.PowerIsOn
		}
		return nil // a lost read-back is for the wait below to repeat
	})
	switch {
	case err != nil:
		return err
	case was == on:
		m.log.Debug("ipmi: power already in the wanted state", "action", action)
		return nil
	case now != on:
		if now, err = m.waitPower(ctx, on, m.cfg.PowerWait); err != nil {
			if errors.Is(err, errStillSwitching) {
				return &IPMIError{BMC: m.cfg.Addr(), Action: action, Kind: ErrBMCCommand,
					Detail: fmt.Sprintf("the BMC accepted the command but still reports power on=%t after %s", now, m.cfg.PowerWait),
					Hint:   "check the machine's power supply and the BMC's event log",
				}
			}
			return err
		}
	}
	m.log.Info("ipmi: power changed", "action", action)
	return nil
}

// errStillSwitching: waitPower's time ran out with the BMC answering, not in the state.
var errStillSwitching = errors.New("the power has not switched yet")

// waitPower polls the BMC, each read in its own session, until it reports the power on
// (or off) or within has passed; it returns the last state read and, if that is not the
// wanted one, the last read's error or errStillSwitching.
func (m *IPMI) waitPower(ctx context.Context, on bool, within time.Duration) (bool, error) {
	wait, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var now bool
	for interval := 100 * time.Millisecond; ; interval = min(2*interval, time.Second) {
		select {
		case <-wait.Done():
			if ctx.Err() != nil {
				return now, ctx.Err()
			}
			return now, errStillSwitching
		case <-time.After(interval):
		}
		st, err := m.status(wait)
		if err == nil {
			if now = st; now == on {
				return now, nil
			}
		} else if wait.Err() != nil {
			if ctx.Err() == nil {
				return now, err // the BMC stopped answering while we waited: say so
			}
			return now, ctx.Err()
		}
	}
}

// Cycle resets a running machine (chassis power cycle), or powers a stopped one on.
func (m *IPMI) Cycle(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	on, err := m.status(ctx)
	if err != nil {
		return err
	}
	if !on {
		return m.setPower(ctx, true)
	}
	if err := m.control(ctx, "power cycle", chassis.ChassisControlPowerCycle); err != nil {
		return err
	}
	m.log.Info("ipmi: power cycled")
	return nil
}

func (m *IPMI) control(ctx context.Context, action string, control chassis.ChassisControl) error {
	return m.do(ctx, action, func(ctx context.Context, c *ipmi.Client) error {
		_, err := c.ChassisControl(ctx, control)
		return err
	})
}

// SetBootDevice sets the BMC's boot flags for the next boot only (not persistent): PXE
// or the disk. The firmware clears them when it has used them.
func (m *IPMI) SetBootDevice(ctx context.Context, dev BootDevice) error {
	if err := dev.Validate(); err != nil {
		return fmt.Errorf("power: IPMI BMC %s: %w", m.cfg.Addr(), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	selector := types.BootDeviceSelectorForcePXE
	if dev == BootDisk {
		selector = types.BootDeviceSelectorForceHardDrive
	}
	bootType := types.BIOSBootTypeLegacy
	if m.cfg.UEFI {
		bootType = types.BIOSBootTypeEFI
	}
	err := m.do(ctx, "set boot device "+string(dev), func(ctx context.Context, c *ipmi.Client) error {
		return c.SetBootDevice(ctx, selector, bootType, false)
	})
	if err == nil {
		m.log.Info("ipmi: boot device set for the next boot", "device", string(dev))
	}
	return err
}

// do runs one action in its own session, retrying with backoff while the BMC does not
// answer in time, and turns every failure into an IPMIError.
func (m *IPMI) do(ctx context.Context, action string, fn func(context.Context, *ipmi.Client) error) error {
	backoff := 250 * time.Millisecond
	var last error
	for attempt := 1; attempt <= m.cfg.Attempts; attempt++ {
		last = m.session(ctx, fn)
		if last == nil {
			return nil
		}
		if !isTimeout(last) || ctx.Err() != nil || attempt == m.cfg.Attempts {
			break
		}
		m.log.Warn("ipmi: BMC did not answer, retrying", "action", action, "attempt", attempt,
			"of", m.cfg.Attempts, "backoff", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 4*time.Second)
	}
	err := m.classify(action, last)
	m.log.Warn("ipmi: action failed", "action", action, "err", err)
	return err
}

// errSession marks a failure to open the RMCP+ session, as opposed to a failed command.
var errSession = errors.New("opening the session")

func (m *IPMI) session(ctx context.Context, fn func(context.Context, *ipmi.Client) error) error {
	c, err := ipmi.NewClient(m.cfg.Host, m.cfg.Port, m.cfg.User, m.cfg.Password)
	if err != nil {
		return err
	}
	c.WithInterface(ipmi.InterfaceLanplus).WithTimeout(m.cfg.Timeout).WithRetry(0)
	if m.cfg.CipherSuite != 0 {
		c.WithCipherSuiteID(types.CipherSuiteID(m.cfg.CipherSuite))
	}
	if err := c.Connect(ctx); err != nil {
		_ = c.Close(context.WithoutCancel(ctx)) // the UDP socket, if the login got that far
		return fmt.Errorf("%w: %w", errSession, err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.Timeout)
		defer cancel()
		_ = c.Close(closeCtx) // the action's result counts, not the goodbye
	}()
	return fn(ctx, c)
}

// isTimeout reports whether err means the BMC did not answer in time. The IPMI library
// loses the error chain while it tries cipher suites, so its words count too.
func isTimeout(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	s := err.Error()
	for _, w := range []string{"timed out", "timeout", "deadline exceeded", "no matching IPMI response", "no UDP datagram matched"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// isAuth reports whether err means the BMC refused the login.
func isAuth(err error) bool {
	if errors.Is(err, ipmi.ErrRAKPAuthentication) {
		return true
	}
	s := strings.ToLower(err.Error())
	for _, w := range []string{"rakp", "unauthorized", "invalid integrity check", "invalid name", "privilege", "authentication"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

func (m *IPMI) classify(action string, err error) *IPMIError {
	e := &IPMIError{BMC: m.cfg.Addr(), Action: action, Detail: m.redact(err.Error())}
	switch {
	case errors.Is(err, context.Canceled):
		e.Kind, e.Hint = ErrBMCUnreachable, "the action was cancelled before the BMC answered"
	case isTimeout(err):
		e.Kind = ErrBMCUnreachable
		e.Detail = fmt.Sprintf("no answer within %s (%d attempts): %s", m.cfg.Timeout, m.cfg.Attempts, e.Detail)
		e.Hint = "check the BMC address and that IPMI over LAN is enabled"
	case isAuth(err):
		e.Kind, e.Hint = ErrBMCAuth, "check the BMC user and password (and that the user may log in over LAN with operator or administrator privilege)"
	case errors.Is(err, errSession):
		e.Kind, e.Hint = ErrBMCUnreachable, "check the BMC address and that IPMI over LAN is enabled"
	default:
		e.Kind, e.Hint = ErrBMCCommand, "check that the BMC user has operator or administrator privilege and the BMC's event log"
	}
	return e
}

// redact removes the password from text that came from the IPMI library.
func (m *IPMI) redact(s string) string {
	if m.cfg.Password == "" {
		return s
	}
	return strings.ReplaceAll(s, m.cfg.Password, redacted)
}
