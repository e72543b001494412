package power

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// RedfishConfig is how to reach one machine's BMC over DMTF Redfish (HTTPS). The
// password is held in memory only: String, GoString and LogValue redact it, and no error
// of the driver contains it.
type RedfishConfig struct {
	// Endpoint is the Redfish service's base, https://host[:port] (the service root is
	// /redfish/v1 under it); a bare host[:port] means https.
	Endpoint string
	User     string // an operator or administrator on the BMC
	Password string
	// TLSSHA256 pins the BMC's certificate: the hex SHA-256 of its DER. BMCs ship
	// self-signed certificates, so the pin is what says which BMC is the real one. Empty
	// verifies the certificate against the system's roots instead.
	TLSSHA256 string
	// System is the Id of the ComputerSystem to drive (the last segment of its URL, or its
	// whole path); empty: the only member of the Systems collection (the first if several).
	System string
	// Timeout bounds one HTTP exchange with the BMC; default 10 s.
	Timeout time.Duration
	// Attempts is how often a request is tried when the BMC does not answer or answers
	// with a server error (5xx), with a backoff between tries; default 3. Other failures
	// (a refused login, a refused request) are not retried.
	Attempts int
	// SoftOffTimeout is how long Off waits for the OS to shut down after GracefulShutdown
	// before it cuts the power (ForceOff); default 60 s.
	SoftOffTimeout time.Duration
	// PowerWait bounds how long On and a ForceOff wait for the BMC to report the new
	// state; default 30 s.
	PowerWait time.Duration
	Logger    *slog.Logger
}

// String describes the BMC without its password.
func (c RedfishConfig) String() string {
	return fmt.Sprintf("redfish %s@%s password %s", c.User, c.Endpoint, redacted)
}

// GoString is String, so that %#v does not print the password either.
func (c RedfishConfig) GoString() string { return c.String() }

// LogValue is the BMC for slog, without its password.
func (c RedfishConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("driver", "redfish"),
		slog.String("bmc", c.Endpoint),
		slog.String("user", c.User),
		slog.String("password", redacted),
	)
}

// ErrBMCCertificate is the kind of a Redfish error when the BMC's TLS certificate is not
// the pinned one (or, without a pin, not one the system's roots vouch for). It is an
// ErrBMCAuth: the BMC failed to prove who it is, so the driver sent it nothing.
var ErrBMCCertificate = fmt.Errorf("%w: its TLS certificate is not the expected one", ErrBMCAuth)

// RedfishError is every error the Redfish driver returns. It names the BMC, the action
// and what to check; its text never contains the password.
type RedfishError struct {
	BMC    string // the endpoint, https://host[:port]
	Action string // "power on", "status", ...
	Kind   error  // ErrBMCUnreachable, ErrBMCAuth, ErrBMCCertificate or ErrBMCCommand
	Status int    // the HTTP status of the BMC's answer; 0 when there was none
	Detail string // what went wrong, password removed
	Hint   string // what to check
}

func (e *RedfishError) Error() string {
	status := ""
	if e.Status != 0 {
		status = fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	return fmt.Sprintf("power: Redfish BMC %s: %s: %v%s: %s; %s", e.BMC, e.Action, e.Kind, status, e.Detail, e.Hint)
}

// Is matches the error's kind (and ErrBMCAuth for ErrBMCCertificate).
func (e *RedfishError) Is(target error) bool { return errors.Is(e.Kind, target) }

// Redfish is the power driver of one machine with a Redfish BMC. It speaks plain HTTPS
// with basic auth on every request (no session to expire or leak), finds the system
// from the service root, and reads the reset action's URL from the system itself.
type Redfish struct {
	cfg    RedfishConfig
	base   *url.URL // scheme and host only
	log    *slog.Logger
	client *http.Client

	mu     sync.Mutex // one action at a time: BMCs serialise anyway
	system string     // the ComputerSystem's path, once found
}

var _ Driver = (*Redfish)(nil)

// maxAnswer bounds a BMC's answer: a ComputerSystem is a few KiB; anything this large
// is not one.
const maxAnswer = 1 << 20

// NewRedfish checks cfg and returns the BMC's driver. It does not contact the BMC.
func NewRedfish(cfg RedfishConfig) (*Redfish, error) {
	base, err := redfishBase(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	cfg.Endpoint = base.String()
	if cfg.User == "" {
		return nil, fmt.Errorf("power: Redfish BMC %s needs a User", cfg.Endpoint)
	}
	pin := strings.ToLower(cfg.TLSSHA256)
	if pin != "" {
		if b, err := hex.DecodeString(pin); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("power: Redfish BMC %s: TLSSHA256 %q: want 64 hex digits (the SHA-256 of the certificate's DER)", cfg.Endpoint, cfg.TLSSHA256)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 3
	}
	if cfg.SoftOffTimeout <= 0 {
		cfg.SoftOffTimeout = 60 * time.Second
	}
	if cfg.PowerWait <= 0 {
		cfg.PowerWait = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Redfish{cfg: cfg, base: base, log: cfg.Logger.With("bmc", cfg)}
	m.client = &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // a BMC network is not reached through the operator's proxy
			TLSClientConfig:     tlsConfig(pin),
			TLSHandshakeTimeout: cfg.Timeout,
			MaxIdleConnsPerHost: 1,
			// Powerctl builds a driver per command: connections serve one command's
			// requests (polls are at most 1 s apart), then go, rather than idle on.
			IdleConnTimeout: 5 * time.Second,
			DialContext:     (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
		},
		// A redirect could take the password elsewhere; a BMC has no reason to send one.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return m, nil
}

// redfishBase parses an endpoint into https://host[:port]. A path of /redfish/v1 is
// dropped; a user or password in the URL is refused (without repeating it).
func redfishBase(endpoint string) (*url.URL, error) {
	if endpoint == "" {
		return nil, errors.New("power: a Redfish BMC needs an Endpoint (https://host[:port])")
	}
	if !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, errors.New("power: Redfish BMC endpoint: want https://host[:port]: it does not parse as a URL")
	}
	if u.User != nil {
		return nil, fmt.Errorf("power: Redfish BMC %s: the endpoint must not carry a user or password (give User and Password)", u.Host)
	}
	p := strings.TrimSuffix(u.Path, "/")
	if u.Scheme != "https" || u.Host == "" || (p != "" && p != "/redfish/v1") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("power: Redfish BMC endpoint %q: want https://host[:port]", u.String())
	}
	return &url.URL{Scheme: "https", Host: u.Host}, nil
}

// errPin is the handshake's error when the certificate is not the pinned one.
var errPin = errors.New("the certificate's SHA-256 is not the pinned TLSSHA256")

// tlsConfig verifies the BMC: by the pinned fingerprint of its certificate if there is
// one (the certificate is self-signed, so there is no chain to check), else by the
// system's roots.
func tlsConfig(pin string) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if pin == "" {
		return c
	}
	want, _ := hex.DecodeString(pin)
	c.InsecureSkipVerify = true // replaced by VerifyConnection: the pin
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errPin
		}
		got := sha256.Sum256(cs.PeerCertificates[0].Raw)
		if !bytes.Equal(got[:], want) {
			return fmt.Errorf("%w (the BMC's is %s)", errPin, hex.EncodeToString(got[:]))
		}
		return nil
	}
	return c
}

// computerSystem is what the driver reads of a Redfish ComputerSystem.
type computerSystem struct {
	PowerState string
	Boot       struct {
		BootSourceOverrideTarget string
		AllowedTargets           []string `json:"BootSourceOverrideTarget@Redfish.AllowableValues"`
	}
	Actions struct {
		Reset struct {
			Target       string   `json:"target"`
			AllowedTypes []string `json:"ResetType@Redfish.AllowableValues"`
		} `json:"#ComputerSystem.Reset"`
	}
	etag string // of the answer, for If-Match
}

// on reports whether the power is applied: PoweringOn, PoweringOff and Paused count as
// on, since the machine draws power and a cut would be felt.
func (s *computerSystem) on() (bool, error) {
	switch s.PowerState {
	case "On", "PoweringOn", "PoweringOff", "Paused":
		return true, nil
	case "Off":
		return false, nil
	}
	return false, fmt.Errorf("PowerState %q: want On, Off, PoweringOn, PoweringOff or Paused", s.PowerState)
}

// Status reports whether the machine's power is on.
func (m *Redfish) Status(ctx context.Context) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	on, _, err := m.status(ctx, "power status")
	if err != nil {
		return "", err
	}
	if on {
		return StateOn, nil
	}
	return StateOff, nil
}

func (m *Redfish) status(ctx context.Context, action string) (bool, *computerSystem, error) {
	sys, err := m.getSystem(ctx, action)
	if err != nil {
		return false, nil, err
	}
	on, err := sys.on()
	if err != nil {
		return false, nil, m.commandError(action, 0, err.Error(), "check the BMC's firmware: its ComputerSystem has no usable PowerState")
	}
	return on, sys, nil
}

// On powers the machine on and returns once the BMC reports it on.
func (m *Redfish) On(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.on(ctx)
}

func (m *Redfish) on(ctx context.Context) error {
	const action = "power on"
	on, sys, err := m.status(ctx, action)
	if err != nil {
		return err
	}
	if on {
		m.log.Debug("redfish: power already on")
		return nil
	}
	if err := m.reset(ctx, action, sys, m.firstOffered(sys, "On", "ForceOn")); err != nil {
		return err
	}
	return m.waitPower(ctx, action, true, m.cfg.PowerWait)
}

// Off asks the OS to shut down (GracefulShutdown), and cuts the power (ForceOff) if the
// machine is still on after SoftOffTimeout; it returns once the BMC reports it off.
func (m *Redfish) Off(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	const action = "power off"
	on, sys, err := m.status(ctx, action)
	if err != nil {
		return err
	}
	if !on {
		m.log.Debug("redfish: power already off")
		return nil
	}
	if m.offers(sys, "GracefulShutdown") {
		if off, err := m.softOff(ctx, action, sys); off || err != nil {
			return err
		}
	}
	if err := m.reset(ctx, action, sys, "ForceOff"); err != nil {
		return err
	}
	return m.waitPower(ctx, action, false, m.cfg.PowerWait)
}

// softOff sends GracefulShutdown and waits SoftOffTimeout for the power to go: off
// reports that it went; neither off nor an error means: cut it. A BMC that refuses the
// shutdown (rather than not answering) gets the ForceOff too.
func (m *Redfish) softOff(ctx context.Context, action string, sys *computerSystem) (off bool, err error) {
	err = m.reset(ctx, action, sys, "GracefulShutdown")
	if err != nil {
		if !errors.Is(err, ErrBMCCommand) || ctx.Err() != nil {
			return false, err
		}
		m.log.Warn("redfish: the BMC refused GracefulShutdown; cutting the power", "err", err)
		return false, nil
	}
	if m.waitPower(ctx, action, false, m.cfg.SoftOffTimeout) == nil {
		m.log.Info("redfish: the OS shut down")
		return true, nil
	}
	m.log.Info("redfish: the OS did not shut down in time; cutting the power", "soft_off_timeout", m.cfg.SoftOffTimeout)
	return false, nil
}

// Cycle resets a running machine (ForceRestart, or PowerCycle where the BMC offers only
// that), or powers a stopped one on.
func (m *Redfish) Cycle(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	const action = "power cycle"
	on, sys, err := m.status(ctx, action)
	if err != nil {
		return err
	}
	if !on {
		return m.on(ctx)
	}
	if err := m.reset(ctx, action, sys, m.firstOffered(sys, "ForceRestart", "PowerCycle")); err != nil {
		return err
	}
	m.log.Info("redfish: power cycled")
	return nil
}

// SetBootDevice sets a one-time boot override (BootSourceOverrideEnabled Once): Pxe or
// Hdd. The firmware clears it when it has used it.
func (m *Redfish) SetBootDevice(ctx context.Context, dev BootDevice) error {
	if err := dev.Validate(); err != nil {
		return fmt.Errorf("power: Redfish BMC %s: %w", m.cfg.Endpoint, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	action := "set boot device " + string(dev)
	target := "Pxe"
	if dev == BootDisk {
		target = "Hdd"
	}
	sys, err := m.getSystem(ctx, action)
	if err != nil {
		return err
	}
	if allowed := sys.Boot.AllowedTargets; len(allowed) > 0 && !slices.Contains(allowed, target) {
		return m.commandError(action, 0, fmt.Sprintf("the BMC does not offer boot override target %s (it offers %s)", target, strings.Join(allowed, ", ")),
			"check the BMC's firmware and the machine's boot settings")
	}
	body := map[string]any{"Boot": map[string]string{
		"BootSourceOverrideTarget":  target,
		"BootSourceOverrideEnabled": "Once",
	}}
	// If-Match: BMCs that send an ETag may insist on it for a PATCH.
	if _, err := m.do(ctx, action, http.MethodPatch, m.system, body, sys.etag, true); err != nil {
		return err
	}
	m.log.Info("redfish: boot device set for the next boot", "device", string(dev))
	return nil
}

// offers reports whether the system's reset action offers resetType; a BMC that does not
// list its values is taken to offer every one.
func (m *Redfish) offers(sys *computerSystem, resetType string) bool {
	allowed := sys.Actions.Reset.AllowedTypes
	return len(allowed) == 0 || slices.Contains(allowed, resetType)
}

// firstOffered is the first of the reset types the system offers; the first one if it
// offers none (so that the error names what the driver wanted).
func (m *Redfish) firstOffered(sys *computerSystem, resetTypes ...string) string {
	for _, rt := range resetTypes {
		if m.offers(sys, rt) {
			return rt
		}
	}
	return resetTypes[0]
}

// reset posts ComputerSystem.Reset to the target the system names.
func (m *Redfish) reset(ctx context.Context, action string, sys *computerSystem, resetType string) error {
	target := sys.Actions.Reset.Target
	if target == "" {
		return m.commandError(action, 0, "the ComputerSystem has no #ComputerSystem.Reset action",
			"check the BMC's firmware (and that the user may see the system's actions)")
	}
	if !m.offers(sys, resetType) {
		return m.commandError(action, 0, fmt.Sprintf("the BMC does not offer ResetType %s (it offers %s)", resetType, strings.Join(sys.Actions.Reset.AllowedTypes, ", ")),
			"check the BMC's firmware")
	}
	// A restart twice is two restarts: retry it only where the BMC cannot have seen it.
	idempotent := resetType != "ForceRestart" && resetType != "PowerCycle"
	if _, err := m.do(ctx, action, http.MethodPost, target, map[string]string{"ResetType": resetType}, "", idempotent); err != nil {
		return err
	}
	m.log.Info("redfish: reset sent", "reset_type", resetType)
	return nil
}

// waitPower polls the system until it reports PowerState On (or Off), at most within.
func (m *Redfish) waitPower(ctx context.Context, action string, on bool, within time.Duration) error {
	want := "Off"
	if on {
		want = "On"
	}
	wait, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for interval := 100 * time.Millisecond; ; interval = min(2*interval, time.Second) {
		sys, err := m.getSystem(wait, action)
		if err == nil && sys.PowerState == want {
			return nil
		}
		select {
		case <-wait.Done():
			if err != nil {
				return err // the last read's failure says more than the wait
			}
			return m.commandError(action, 0,
				fmt.Sprintf("the BMC accepted the reset but reports PowerState %s after %s", sys.PowerState, within),
				"check the machine's power supply and the BMC's event log")
		case <-time.After(interval):
		}
	}
}

// getSystem finds the system (once) and reads it.
func (m *Redfish) getSystem(ctx context.Context, action string) (*computerSystem, error) {
	if m.system == "" {
		p, err := m.findSystem(ctx, action)
		if err != nil {
			return nil, err
		}
		m.system = p
	}
	var sys computerSystem
	resp, err := m.do(ctx, action, http.MethodGet, m.system, nil, "", true)
	if err != nil {
		var re *RedfishError
		if errors.As(err, &re) && re.Status == http.StatusNotFound {
			m.system = "" // the BMC renumbered its systems: look again next time
		}
		return nil, err
	}
	if err := m.decode(action, resp, &sys); err != nil {
		return nil, err
	}
	sys.etag = resp.etag
	return &sys, nil
}

// findSystem reads the service root and the Systems collection, and picks cfg.System or
// the first member.
func (m *Redfish) findSystem(ctx context.Context, action string) (string, error) {
	var root struct {
		Systems struct {
			ID string `json:"@odata.id"`
		}
	}
	resp, err := m.do(ctx, action, http.MethodGet, "/redfish/v1/", nil, "", true)
	if err != nil {
		return "", err
	}
	if err := m.decode(action, resp, &root); err != nil {
		return "", err
	}
	systems := root.Systems.ID
	if systems == "" {
		return "", m.commandError(action, 0, "the service root links no Systems collection",
			"check that the endpoint is the BMC's Redfish service and the BMC's firmware")
	}
	var coll struct {
		Members []struct {
			ID string `json:"@odata.id"`
		}
	}
	if resp, err = m.do(ctx, action, http.MethodGet, systems, nil, "", true); err != nil {
		return "", err
	}
	if err := m.decode(action, resp, &coll); err != nil {
		return "", err
	}
	var ids []string
	for _, mem := range coll.Members {
		if mem.ID == "" {
			continue
		}
		p := strings.TrimSuffix(mem.ID, "/")
		ids = append(ids, p)
		if m.cfg.System != "" && (path.Base(p) == m.cfg.System || p == strings.TrimSuffix(m.cfg.System, "/")) {
			return p, nil
		}
	}
	switch {
	case len(ids) == 0:
		return "", m.commandError(action, 0, "the Systems collection has no members",
			"check that the user may see the machine's ComputerSystem")
	case m.cfg.System != "":
		return "", m.commandError(action, 0, fmt.Sprintf("no system %q among %s", m.cfg.System, strings.Join(ids, ", ")),
			"check the configured system id")
	case len(ids) > 1:
		m.log.Warn("redfish: the BMC has several systems; using the first (set System to choose)", "systems", ids)
	}
	return ids[0], nil
}

// answer is a BMC's successful answer.
type answer struct {
	body []byte
	etag string
}

func (m *Redfish) decode(action string, a *answer, v any) error {
	if err := json.Unmarshal(a.body, v); err != nil {
		return m.commandError(action, 0, "the BMC's answer is not the JSON of a Redfish resource: "+err.Error(),
			"check that the endpoint is the BMC's Redfish service")
	}
	return nil
}

// do sends one request, retrying with backoff while the BMC does not answer or answers
// 5xx (for a request that is not idempotent: only while it cannot have been received or
// acted on), and turns every failure into a RedfishError.
func (m *Redfish) do(ctx context.Context, action, method, ref string, body any, ifMatch string, idempotent bool) (*answer, error) {
	u, err := m.base.Parse(ref)
	if err != nil || u.Host != m.base.Host || u.Scheme != "https" {
		// A link to another host would take the password there.
		return nil, m.commandError(action, 0, fmt.Sprintf("the BMC links to %q, not a path of its own", ref),
			"check the BMC's firmware")
	}
	var payload []byte
	if body != nil {
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		a, fail := m.exchange(ctx, method, u.String(), payload, ifMatch)
		if fail == nil {
			return a, nil
		}
		retry := fail.retryable && (idempotent || fail.unsent || fail.status == http.StatusServiceUnavailable)
		if !retry || ctx.Err() != nil || attempt >= m.cfg.Attempts {
			err := m.classify(action, fail, attempt)
			m.log.Warn("redfish: request failed", "action", action, "method", method, "path", u.Path, "err", err)
			return nil, err
		}
		m.log.Warn("redfish: BMC did not answer, retrying", "action", action, "method", method, "path", u.Path,
			"attempt", attempt, "of", m.cfg.Attempts, "backoff", backoff, "status", fail.status)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 4*time.Second)
	}
}

// failure is one failed exchange, before it becomes a RedfishError.
type failure struct {
	err       error // the transport's error, when there was no answer
	status    int   // the HTTP status, when there was an answer
	message   string
	retryable bool // no answer, or a 5xx
	unsent    bool // the request cannot have reached the BMC (the connection was not made)
}

func (m *Redfish) exchange(ctx context.Context, method, u string, payload []byte, ifMatch string) (*answer, *failure) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, &failure{err: err}
	}
	req.SetBasicAuth(m.cfg.User, m.cfg.Password)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("OData-Version", "4.0")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, &failure{err: err, retryable: !isCertRefusal(err) && !isNotTLS(err), unsent: isDialError(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, &failure{err: err, retryable: true}
	}
	if len(data) > maxAnswer {
		return nil, &failure{status: resp.StatusCode, message: fmt.Sprintf("the answer is larger than %d bytes", maxAnswer)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &failure{status: resp.StatusCode, message: redfishMessage(data), retryable: resp.StatusCode >= 500}
	}
	return &answer{body: data, etag: resp.Header.Get("ETag")}, nil
}

// isCertRefusal reports whether the handshake failed because the driver refused the
// BMC's certificate: trying again changes nothing.
func isCertRefusal(err error) bool {
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	return errors.Is(err, errPin) || errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne)
}

// isNotTLS reports whether the peer answered with something other than TLS (plain HTTP).
func isNotTLS(err error) bool {
	var rhe tls.RecordHeaderError
	return errors.As(err, &rhe)
}

// isDialError reports whether err happened while connecting, before any byte of the
// request was sent.
func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// redfishMessage is the text of a Redfish error body: its message and those of its
// @Message.ExtendedInfo, at most 400 bytes; a body that is not one gives its start.
func redfishMessage(data []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Info    []struct {
				MessageID string `json:"MessageId"`
				Message   string
			} `json:"@Message.ExtendedInfo"`
		} `json:"error"`
	}
	var parts []string
	if json.Unmarshal(data, &e) == nil && (e.Error.Code != "" || e.Error.Message != "") {
		parts = append(parts, strings.TrimSpace(e.Error.Code+" "+e.Error.Message))
		for _, i := range e.Error.Info {
			parts = append(parts, strings.TrimSpace(i.MessageID+" "+i.Message))
		}
	} else if s := strings.TrimSpace(string(data)); s != "" {
		parts = append(parts, strings.ToValidUTF8(s, "?"))
	}
	msg := strings.Join(parts, "; ")
	if len(msg) > 400 {
		msg = strings.ToValidUTF8(msg[:400], "") + "..."
	}
	if msg == "" {
		return "no error body"
	}
	return msg
}

func (m *Redfish) classify(action string, f *failure, attempts int) *RedfishError {
	e := &RedfishError{BMC: m.cfg.Endpoint, Action: action, Status: f.status}
	if f.err != nil {
		e.Detail = m.redact(f.err.Error())
	} else {
		e.Detail = m.redact(f.message)
	}
	switch {
	case f.err != nil && errors.Is(f.err, context.Canceled):
		e.Kind, e.Hint = ErrBMCUnreachable, "the action was cancelled before the BMC answered"
	case f.err != nil && isCertRefusal(f.err):
		e.Kind = ErrBMCCertificate
		e.Hint = "check that the endpoint is this machine's BMC; if its certificate was replaced, pin the new one (tls_sha256)"
	case f.err != nil && isNotTLS(f.err):
		e.Kind = ErrBMCUnreachable
		e.Hint = "the endpoint answers, but not with TLS: check the port of the BMC's Redfish service (HTTPS)"
	case f.err != nil:
		e.Kind = ErrBMCUnreachable
		e.Detail = fmt.Sprintf("no answer within %s (%d attempts): %s", m.cfg.Timeout, attempts, e.Detail)
		e.Hint = "check the BMC address, that its Redfish service (HTTPS) is enabled and that the coordinator reaches the BMC network"
	case f.status == http.StatusUnauthorized || f.status == http.StatusForbidden:
		e.Kind = ErrBMCAuth
		e.Hint = "check the BMC user and password, and that the user has the Operator or Administrator role"
	case f.status >= 500:
		e.Kind = ErrBMCCommand
		e.Detail = fmt.Sprintf("%s (%d attempts)", e.Detail, attempts)
		e.Hint = "the BMC failed the request: check the BMC's event log, or reset the BMC"
	default:
		e.Kind, e.Hint = ErrBMCCommand, "check the BMC's firmware and event log"
	}
	return e
}

func (m *Redfish) commandError(action string, status int, detail, hint string) *RedfishError {
	return &RedfishError{BMC: m.cfg.Endpoint, Action: action, Kind: ErrBMCCommand, Status: status,
		Detail: m.redact(detail), Hint: hint}
}

// redact removes the password from text that came from the BMC or the HTTP stack.
func (m *Redfish) redact(s string) string {
	if m.cfg.Password == "" {
		return s
	}
	return strings.ReplaceAll(s, m.cfg.Password, redacted)
}
