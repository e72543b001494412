package power_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/internal/redfishbmc"
)

const (
	bmcUser     = "admin"
	bmcPassword = "s3cret-Redfish-pw"
)

// startBMC runs a Redfish BMC on a loopback port in front of chassis until the test ends.
func startBMC(t *testing.T, chassis redfishbmc.Chassis) *redfishbmc.BMC {
	t.Helper()
	return startBMCWith(t, redfishbmc.Config{Chassis: chassis})
}

// startBMCWith is startBMC with more of the BMC's config (User and Password are the test's).
func startBMCWith(t *testing.T, cfg redfishbmc.Config) *redfishbmc.BMC {
	t.Helper()
	cfg.User, cfg.Password = bmcUser, bmcPassword
	bmc, err := redfishbmc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- bmc.Serve() }()
	t.Cleanup(func() {
		if err := bmc.Close(); err != nil {
			t.Errorf("closing the BMC: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("the BMC's Serve: %v", err)
		}
	})
	return bmc
}

// testConfig is a driver config for bmc with the test's short waits, pinned to its
// certificate; change adjusts it.
func testConfig(bmc *redfishbmc.BMC, change ...func(*power.RedfishConfig)) power.RedfishConfig {
	cfg := power.RedfishConfig{
		Endpoint: bmc.URL(), User: bmcUser, Password: bmcPassword, TLSSHA256: bmc.Fingerprint(),
		Timeout: 5 * time.Second, SoftOffTimeout: 300 * time.Millisecond, PowerWait: 5 * time.Second,
	}
	for _, c := range change {
		c(&cfg)
	}
	return cfg
}

func newRedfish(t *testing.T, cfg power.RedfishConfig) *power.Redfish {
	t.Helper()
	d, err := power.NewRedfish(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantLog(t *testing.T, c *redfishbmc.MemChassis, want ...string) {
	t.Helper()
	if got := c.Log(); !slices.Equal(got, want) {
		t.Fatalf("the machine was asked %q, want %q", got, want)
	}
}

func wantState(t *testing.T, d power.Driver, want power.State) {
	t.Helper()
	got, err := d.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("Status = %s, want %s", got, want)
	}
}

// noPassword fails the test if the password shows in err's text (or its %#v).
func noPassword(t *testing.T, err error) {
	t.Helper()
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		if strings.Contains(s, bmcPassword) {
			t.Fatalf("the error shows the password: %s", s)
		}
	}
}

func TestRedfishOnStatusOff(t *testing.T) {
	c := redfishbmc.NewMemChassis(false)
	d := newRedfish(t, testConfig(startBMC(t, c)))
	ctx := t.Context()

	wantState(t, d, power.StateOff)
	if err := d.On(ctx); err != nil {
		t.Fatal(err)
	}
	wantState(t, d, power.StateOn)
	if err := d.On(ctx); err != nil { // idempotent: no second request
		t.Fatal(err)
	}
	wantLog(t, c, "on")

	start := time.Now()
	if err := d.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= 300*time.Millisecond {
		t.Errorf("Off took %s although the OS shut down at once (soft-off timeout 300ms)", took)
	}
	wantState(t, d, power.StateOff)
	if err := d.Off(ctx); err != nil {
		t.Fatal(err)
	}
	wantLog(t, c, "on", "shutdown") // the OS obeyed: no ForceOff
}

func TestRedfishOffCutsThePowerWhenTheOSIgnoresTheShutdown(t *testing.T) {
	c := redfishbmc.NewMemChassis(true)
	c.IgnoreShutdown(true)
	d := newRedfish(t, testConfig(startBMC(t, c)))

	start := time.Now()
	if err := d.Off(t.Context()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("Off cut the power after %s, before the soft-off timeout (300ms)", took)
	}
	wantLog(t, c, "shutdown", "off")
	wantState(t, d, power.StateOff)
}

func TestRedfishCycle(t *testing.T) {
	c := redfishbmc.NewMemChassis(true)
	d := newRedfish(t, testConfig(startBMC(t, c)))
	ctx := t.Context()

	if err := d.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	wantLog(t, c, "reset")
	wantState(t, d, power.StateOn)

	if err := c.SetPower(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Cycle(ctx); err != nil { // a stopped machine is powered on
		t.Fatal(err)
	}
	wantLog(t, c, "reset", "off", "on")
	wantState(t, d, power.StateOn)
}

// TestRedfishUsesTheResetTypesOffered: a BMC without GracefulShutdown and ForceRestart
// (some firmwares offer PowerCycle instead) is switched with what it offers.
func TestRedfishUsesTheResetTypesOffered(t *testing.T) {
	c := redfishbmc.NewMemChassis(false)
	bmc := startBMCWith(t, redfishbmc.Config{Chassis: c, ResetTypes: []string{"ForceOn", "ForceOff", "PowerCycle"}})
	d := newRedfish(t, testConfig(bmc))
	ctx := t.Context()
	for _, act := range []func(context.Context) error{d.On, d.Cycle, d.Off} {
		if err := act(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wantLog(t, c, "on", "reset", "off")
	wantState(t, d, power.StateOff)
}

func TestRedfishBootOnce(t *testing.T) {
	c := redfishbmc.NewMemChassis(false)
	d := newRedfish(t, testConfig(startBMC(t, c)))
	ctx := t.Context()

	if err := d.SetBootDevice(ctx, power.BootPXE); err != nil {
		t.Fatal(err)
	}
	if got := c.BootOnce(); got != redfishbmc.BootPxe {
		t.Fatalf("one-time boot device %q, want %q", got, redfishbmc.BootPxe)
	}
	if err := d.SetBootDevice(ctx, power.BootDisk); err != nil {
		t.Fatal(err)
	}
	if got := c.BootOnce(); got != redfishbmc.BootHdd {
		t.Fatalf("one-time boot device %q, want %q", got, redfishbmc.BootHdd)
	}
	if err := d.On(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.BootOnce(); got != "" {
		t.Fatalf("the one-time boot device %q is still set after the boot", got)
	}
	if err := d.SetBootDevice(ctx, "floppy"); err == nil {
		t.Fatal("SetBootDevice(floppy) succeeded")
	}
	wantLog(t, c, "boot Pxe", "boot Hdd", "on")
}

func TestRedfishWrongPasswordChangesNothing(t *testing.T) {
	c := redfishbmc.NewMemChassis(true)
	bmc := startBMC(t, c)
	const wrong = "not-the-password"
	d := newRedfish(t, testConfig(bmc, func(cfg *power.RedfishConfig) { cfg.Password = wrong }))
	ctx := t.Context()

	actions := map[string]func() error{
		"status": func() error { _, err := d.Status(ctx); return err },
		"on":     func() error { return d.On(ctx) },
		"off":    func() error { return d.Off(ctx) },
		"cycle":  func() error { return d.Cycle(ctx) },
		"boot":   func() error { return d.SetBootDevice(ctx, power.BootPXE) },
	}
	for name, act := range actions {
		err := act()
		if !errors.Is(err, power.ErrBMCAuth) {
			t.Fatalf("%s with a wrong password: %v, want ErrBMCAuth", name, err)
		}
		var re *power.RedfishError
		if !errors.As(err, &re) || re.Status != 401 || re.BMC != bmc.URL() {
			t.Fatalf("%s: %#v, want a RedfishError from %s with HTTP 401", name, err, bmc.URL())
		}
		if strings.Contains(err.Error(), wrong) {
			t.Fatalf("%s: the error shows the password: %v", name, err)
		}
		if !strings.Contains(err.Error(), "check the BMC user and password") {
			t.Errorf("%s: the error does not say what to check: %v", name, err)
		}
	}
	wantLog(t, c) // nothing asked of the machine
	if !c.On() || c.BootOnce() != "" {
		t.Fatal("a refused login changed the machine")
	}
}

// TestRedfishUnreachableRetries: a BMC that hangs up on every connection is tried
// Attempts times, then reported unreachable.
func TestRedfishUnreachableRetries(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	d := newRedfish(t, power.RedfishConfig{Endpoint: "https://" + ln.Addr().String(), User: bmcUser,
		Password: bmcPassword, TLSSHA256: strings.Repeat("ab", 32), Attempts: 3, Timeout: 2 * time.Second})
	_, err = d.Status(t.Context())
	if !errors.Is(err, power.ErrBMCUnreachable) {
		t.Fatalf("Status of a BMC that hangs up: %v, want ErrBMCUnreachable", err)
	}
	if n := accepted.Load(); n != 3 {
		t.Errorf("the driver connected %d times, want 3 (Attempts)", n)
	}
	if !strings.Contains(err.Error(), "3 attempts") || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("the error does not name the BMC and the attempts: %v", err)
	}
	noPassword(t, err)

	// A closed port: refused at once, every attempt.
	addr := ln.Addr().String()
	ln.Close()
	d = newRedfish(t, power.RedfishConfig{Endpoint: "https://" + addr, User: bmcUser, Password: bmcPassword, Attempts: 2})
	if err := d.On(t.Context()); !errors.Is(err, power.ErrBMCUnreachable) {
		t.Fatalf("On against a closed port: %v, want ErrBMCUnreachable", err)
	}
}

// failingChassis answers every request with an error: the BMC's 500.
type failingChassis struct {
	redfishbmc.Chassis
	calls atomic.Int32
}

func (f *failingChassis) PowerState(context.Context) (bool, error) {
	f.calls.Add(1)
	return false, errors.New("the chassis does not answer")
}

func TestRedfishServerErrorsAreRetried(t *testing.T) {
	f := &failingChassis{Chassis: redfishbmc.NewMemChassis(false)}
	d := newRedfish(t, testConfig(startBMC(t, f), func(cfg *power.RedfishConfig) { cfg.Attempts = 2 }))
	_, err := d.Status(t.Context())
	var re *power.RedfishError
	if !errors.Is(err, power.ErrBMCCommand) || !errors.As(err, &re) || re.Status != 500 {
		t.Fatalf("Status with a failing chassis: %v, want ErrBMCCommand with HTTP 500", err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("the BMC was asked %d times, want 2 (Attempts)", n)
	}
	if !strings.Contains(err.Error(), "the chassis does not answer") {
		t.Errorf("the error does not carry the BMC's message: %v", err)
	}
}

func TestRedfishRefusesAnotherCertificate(t *testing.T) {
	c := redfishbmc.NewMemChassis(false)
	bmc := startBMC(t, c)
	other := sha256.Sum256([]byte("another BMC's certificate"))
	for name, pin := range map[string]string{"wrong pin": hex.EncodeToString(other[:]), "no pin": ""} {
		d := newRedfish(t, testConfig(bmc, func(cfg *power.RedfishConfig) { cfg.TLSSHA256 = pin }))
		err := d.On(t.Context())
		if !errors.Is(err, power.ErrBMCCertificate) || !errors.Is(err, power.ErrBMCAuth) {
			t.Fatalf("%s: On: %v, want ErrBMCCertificate", name, err)
		}
		if name == "wrong pin" && !strings.Contains(err.Error(), bmc.Fingerprint()) {
			t.Errorf("%s: the error does not show the BMC's fingerprint: %v", name, err)
		}
		if strings.Contains(err.Error(), "attempts") {
			t.Errorf("%s: a refused certificate was retried: %v", name, err)
		}
		noPassword(t, err)
	}
	wantLog(t, c)
	// The pin is case-insensitive hex.
	d := newRedfish(t, testConfig(bmc, func(cfg *power.RedfishConfig) { cfg.TLSSHA256 = strings.ToUpper(bmc.Fingerprint()) }))
	wantState(t, d, power.StateOff)
}

func TestRedfishConfigHidesThePassword(t *testing.T) {
	cfg := power.RedfishConfig{Endpoint: "https://bmc.example:8443", User: bmcUser, Password: bmcPassword}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("bmc", "cfg", cfg)
	for _, s := range []string{cfg.String(), fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg), logs.String()} {
		if strings.Contains(s, bmcPassword) {
			t.Fatalf("the config shows the password: %s", s)
		}
		if !strings.Contains(s, "bmc.example:8443") {
			t.Fatalf("the config does not name the BMC: %s", s)
		}
	}
	for _, bad := range []power.RedfishConfig{
		{Endpoint: "http://bmc.example", User: bmcUser},
		{Endpoint: "https://root:" + bmcPassword + "@bmc.example", User: bmcUser},
		{Endpoint: "https://bmc.example/some/path", User: bmcUser},
		{Endpoint: "https://bmc.example", User: ""},
		{Endpoint: "https://bmc.example", User: bmcUser, TLSSHA256: "abc"},
	} {
		_, err := power.NewRedfish(bad)
		if err == nil {
			t.Fatalf("NewRedfish(%s) succeeded", bad.Endpoint)
		}
		noPassword(t, err)
	}
	for _, ok := range []string{"bmc.example", "https://bmc.example:8443/", "https://bmc.example/redfish/v1/"} {
		if _, err := power.NewRedfish(power.RedfishConfig{Endpoint: ok, User: bmcUser}); err != nil {
			t.Errorf("NewRedfish(%s): %v", ok, err)
		}
	}
}

// The logs of a failed action carry no password either.
func TestRedfishLogsHideThePassword(t *testing.T) {
	var mu sync.Mutex
	var logs bytes.Buffer
	h := slog.NewTextHandler(&lockedWriter{mu: &mu, w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug})
	c := redfishbmc.NewMemChassis(false)
	bmc := startBMC(t, c)
	d := newRedfish(t, testConfig(bmc, func(cfg *power.RedfishConfig) { cfg.Logger = slog.New(h) }))
	if err := d.On(t.Context()); err != nil {
		t.Fatal(err)
	}
	wrong := newRedfish(t, testConfig(bmc, func(cfg *power.RedfishConfig) {
		cfg.Logger, cfg.Password = slog.New(h), bmcPassword+"x"
	}))
	if err := wrong.Off(t.Context()); err == nil {
		t.Fatal("Off with a wrong password succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logs.String(), bmcPassword) {
		t.Fatalf("the logs show the password:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "reset sent") {
		t.Fatalf("the logs do not say what the driver did:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// sushyView is what testdata/sushy_bmc.py reports of the system.
type sushyView struct {
	PowerState  string `json:"power_state"`
	BootTarget  string `json:"boot_target"`
	BootEnabled string `json:"boot_enabled"`
}

// debianPython is the interpreter Debian's python3-sushy is installed for: a python3
// earlier in PATH (pyenv, a venv) does not see /usr/lib/python3/dist-packages.
const debianPython = "/usr/bin/python3"

// sushy runs OpenStack's sushy (Debian's python3-sushy), an independent Redfish client,
// against bmc: "state", "boot" or "reset TYPE".
func sushy(t *testing.T, bmc *redfishbmc.BMC, op ...string) sushyView {
	t.Helper()
	if out, err := exec.Command(debianPython, "-c", "import sushy").CombinedOutput(); err != nil {
		t.Fatalf("python3-sushy is needed for this test (apt-get install python3-sushy; .ci/install-debs has it): %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, debianPython, append([]string{"testdata/sushy_bmc.py", bmc.URL(), bmcUser}, op...)...)
	// requests lets REQUESTS_CA_BUNDLE (and CURL_CA_BUNDLE) override verify=False: drop
	// them, or the self-signed certificate is checked against a CA bundle after all.
	cmd.Env = slices.DeleteFunc(cmd.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "REQUESTS_CA_BUNDLE=") || strings.HasPrefix(kv, "CURL_CA_BUNDLE=")
	})
	cmd.Env = append(cmd.Env, "RIVET_BMC_PASSWORD="+bmcPassword)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sushy %s: %v\n%s", strings.Join(op, " "), err, stderr.String())
	}
	var v sushyView
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("sushy %s printed %q: %v\n%s", strings.Join(op, " "), out, err, stderr.String())
	}
	return v
}

// TestRedfishAgreesWithSushy: what Rivet's driver switches, sushy sees, and what sushy
// switches, Rivet's driver sees.
func TestRedfishAgreesWithSushy(t *testing.T) {
	c := redfishbmc.NewMemChassis(false)
	bmc := startBMC(t, c)
	d := newRedfish(t, testConfig(bmc))
	ctx := t.Context()

	if v := sushy(t, bmc, "state"); v.PowerState != "Off" {
		t.Fatalf("sushy sees power %q before anything, want Off", v.PowerState)
	}
	if err := d.SetBootDevice(ctx, power.BootPXE); err != nil {
		t.Fatal(err)
	}
	if v := sushy(t, bmc, "boot"); v.BootTarget != "Pxe" || v.BootEnabled != "Once" {
		t.Fatalf("sushy sees boot override %s/%s after Rivet's SetBootDevice(pxe), want Pxe/Once", v.BootTarget, v.BootEnabled)
	}
	if err := d.On(ctx); err != nil {
		t.Fatal(err)
	}
	if v := sushy(t, bmc, "state"); v.PowerState != "On" {
		t.Fatalf("sushy sees power %q after Rivet's On, want On", v.PowerState)
	}
	if err := d.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if v := sushy(t, bmc, "state"); v.PowerState != "Off" {
		t.Fatalf("sushy sees power %q after Rivet's Off, want Off", v.PowerState)
	}

	if v := sushy(t, bmc, "reset", "On"); v.PowerState != "On" {
		t.Fatalf("sushy sees power %q after its own reset On, want On", v.PowerState)
	}
	wantState(t, d, power.StateOn)
	sushy(t, bmc, "reset", "ForceOff")
	wantState(t, d, power.StateOff)
	wantLog(t, c, "boot Pxe", "on", "shutdown", "on", "off")
}
