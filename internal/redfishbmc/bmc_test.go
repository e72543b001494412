package redfishbmc

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
)

const (
	testUser     = "admin"
	testPassword = "bmc-test-pw"
)

func start(t *testing.T, c Chassis) *BMC {
	t.Helper()
	b, err := New(Config{User: testUser, Password: testPassword, Chassis: c})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve() }()
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return b
}

// client trusts the BMC's own certificate as its root: the certificate must name the
// loopback address the BMC listens on.
func client(t *testing.T, b *BMC) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b.CertificatePEM()) {
		t.Fatal("the BMC's certificate PEM does not parse")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
}

// call sends one request; user "" sends no credentials.
func call(t *testing.T, c *http.Client, b *BMC, method, path, user, password, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, header: resp.Header}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &r.body); err != nil {
			t.Fatalf("%s %s: the body is not a JSON object: %v: %q", method, path, err, data)
		}
	}
	return r
}

// messageID is the MessageId of a Redfish error body's first extended info.
func messageID(r reply) string {
	e, _ := r.body["error"].(map[string]any)
	info, _ := e["@Message.ExtendedInfo"].([]any)
	if len(info) == 0 {
		return ""
	}
	m, _ := info[0].(map[string]any)
	id, _ := m["MessageId"].(string)
	return id
}

func TestServiceRootIsOpenTheRestNeedsThePassword(t *testing.T) {
	b := start(t, NewMemChassis(false))
	c := client(t, b)
	for _, p := range []string{"/redfish/v1", "/redfish/v1/"} {
		r := call(t, c, b, "GET", p, "", "", "")
		systems, _ := r.body["Systems"].(map[string]any)
		if r.status != 200 || systems["@odata.id"] != "/redfish/v1/Systems" {
			t.Fatalf("GET %s without credentials: %d %v", p, r.status, r.body)
		}
	}
	for _, cred := range [][2]string{{"", ""}, {testUser, "wrong"}, {"root", testPassword}, {testUser, testPassword + "x"}} {
		r := call(t, c, b, "GET", "/redfish/v1/Systems", cred[0], cred[1], "")
		if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") || !strings.HasSuffix(messageID(r), "ResourceAtUriUnauthorized") {
			t.Fatalf("GET Systems as %q/%q: %d %v %v", cred[0], cred[1], r.status, r.header, r.body)
		}
	}
	r := call(t, c, b, "GET", "/redfish/v1/Systems", testUser, testPassword, "")
	if r.status != 200 || r.body["Members@odata.count"] != float64(1) {
		t.Fatalf("GET Systems: %d %v", r.status, r.body)
	}
	if r := call(t, c, b, "GET", "/redfish/v1/Managers", testUser, testPassword, ""); r.status != 404 || !strings.HasSuffix(messageID(r), "ResourceMissingAtURI") {
		t.Fatalf("GET an unknown resource: %d %v", r.status, r.body)
	}
	if r := call(t, c, b, "DELETE", b.SystemPath(), testUser, testPassword, ""); r.status != 405 || r.header.Get("Allow") == "" {
		t.Fatalf("DELETE the system: %d %v", r.status, r.header)
	}
}

func TestFingerprintIsTheServedCertificate(t *testing.T) {
	b := start(t, NewMemChassis(false))
	conn, err := tls.Dial("tcp", b.Addr(), &tls.Config{InsecureSkipVerify: true}) // the test reads the certificate
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].Raw)
	if got := hex.EncodeToString(sum[:]); got != b.Fingerprint() {
		t.Fatalf("the served certificate's SHA-256 is %s, Fingerprint says %s", got, b.Fingerprint())
	}
}

func TestSystemResetAndBoot(t *testing.T) {
	ch := NewMemChassis(false)
	b := start(t, ch)
	c := client(t, b)
	sys := b.SystemPath()
	get := func() map[string]any {
		t.Helper()
		r := call(t, c, b, "GET", sys, testUser, testPassword, "")
		if r.status != 200 {
			t.Fatalf("GET %s: %d %v", sys, r.status, r.body)
		}
		return r.body
	}
	s := get()
	reset := s["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)
	if s["PowerState"] != "Off" || reset["target"] != sys+"/Actions/ComputerSystem.Reset" {
		t.Fatalf("the system: %v", s)
	}
	target := reset["target"].(string)

	for body, want := range map[string]string{
		`{"ResetType": "Explode"}`:      "ActionParameterValueNotInList",
		`{}`:                            "ActionParameterMissing",
		`{"ResetType": `:                "MalformedJSON",
		`{"ResetType": "On", "Now": 1}`: "MalformedJSON",
		`{"ResetType": "On"} {"x": 1}`:  "MalformedJSON",
		`["On"]`:                        "MalformedJSON",
		strings.Repeat(" ", maxBody+1):  "MalformedJSON",
	} {
		r := call(t, c, b, "POST", target, testUser, testPassword, body)
		if r.status != 400 || !strings.HasSuffix(messageID(r), want) {
			t.Fatalf("POST %.40q: %d %v, want 400 %s", body, r.status, r.body, want)
		}
	}
	for body, want := range map[string]string{
		`{"Boot": {"BootSourceOverrideTarget": "Floppy"}}`:                                         "PropertyValueNotInList",
		`{"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Continuous"}}`: "PropertyValueNotInList",
		`{"Boot": {}}`:      "PropertyMissing",
		`{"AssetTag": "x"}`: "MalformedJSON",
	} {
		r := call(t, c, b, "PATCH", sys, testUser, testPassword, body)
		if r.status != 400 || !strings.HasSuffix(messageID(r), want) {
			t.Fatalf("PATCH %s: %d %v, want 400 %s", body, r.status, r.body, want)
		}
	}
	if log := ch.Log(); len(log) != 0 {
		t.Fatalf("bad requests reached the machine: %q", log)
	}

	if r := call(t, c, b, "PATCH", sys, testUser, testPassword, `{"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}}`); r.status != 204 {
		t.Fatalf("PATCH boot once: %d %v", r.status, r.body)
	}
	boot := get()["Boot"].(map[string]any)
	if boot["BootSourceOverrideTarget"] != "Pxe" || boot["BootSourceOverrideEnabled"] != "Once" || ch.BootOnce() != BootPxe {
		t.Fatalf("after PATCH: %v, the machine's %q", boot, ch.BootOnce())
	}
	if r := call(t, c, b, "POST", target, testUser, testPassword, `{"ResetType": "On"}`); r.status != 204 {
		t.Fatalf("On: %d %v", r.status, r.body)
	}
	s = get()
	boot = s["Boot"].(map[string]any)
	if s["PowerState"] != "On" || boot["BootSourceOverrideEnabled"] != "Disabled" || ch.BootOnce() != "" {
		t.Fatalf("after On the override should be used: %v, the machine's %q", s, ch.BootOnce())
	}
	for _, rt := range []string{"On", "ForceRestart", "GracefulShutdown", "ForceOn", "PowerCycle", "ForceOff"} {
		if r := call(t, c, b, "POST", target, testUser, testPassword, `{"ResetType": "`+rt+`"}`); r.status != 204 {
			t.Fatalf("%s: %d %v", rt, r.status, r.body)
		}
	}
	want := []string{"boot Pxe", "on", "reset", "shutdown", "on", "reset", "off"} // a second On changes nothing
	if got := ch.Log(); !slices.Equal(got, want) || ch.On() {
		t.Fatalf("the machine was asked %q (on=%t), want %q and off", got, ch.On(), want)
	}
}

func TestNewNeedsUserPasswordChassis(t *testing.T) {
	for _, cfg := range []Config{{Password: "p", Chassis: NewMemChassis(false)}, {User: "u", Chassis: NewMemChassis(false)}, {User: "u", Password: "p"}} {
		if b, err := New(cfg); err == nil {
			b.Close()
			t.Fatalf("New(%+v) succeeded", cfg)
		}
	}
}

// recorder is a power.Driver that records what it is asked.
type recorder struct {
	on   bool
	boot power.BootDevice
	log  []string
}

func (r *recorder) Status(context.Context) (power.State, error) {
	if r.on {
		return power.StateOn, nil
	}
	return power.StateOff, nil
}
func (r *recorder) On(context.Context) error  { r.log = append(r.log, "on"); r.on = true; return nil }
func (r *recorder) Off(context.Context) error { r.log = append(r.log, "off"); r.on = false; return nil }
func (r *recorder) Cycle(context.Context) error {
	r.log = append(r.log, "cycle")
	r.on = true
	return nil
}
func (r *recorder) SetBootDevice(_ context.Context, d power.BootDevice) error {
	r.log = append(r.log, "boot "+string(d))
	r.boot = d
	return nil
}

func TestDriverChassis(t *testing.T) {
	ctx := t.Context()
	r := &recorder{}
	c := DriverChassis{Driver: r}
	steps := []func() error{
		func() error { return c.SetBootOnce(ctx, BootHdd) },
		func() error { return c.SetBootOnce(ctx, BootPxe) },
		func() error { return c.SetPower(ctx, true) },
		func() error { return c.Reset(ctx) },
		func() error { return c.Shutdown(ctx) },
		func() error { return c.SetPower(ctx, false) },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if want := []string{"boot disk", "boot pxe", "on", "cycle", "off", "off"}; !slices.Equal(r.log, want) {
		t.Fatalf("the driver was asked %q, want %q", r.log, want)
	}
	if on, err := c.PowerState(ctx); err != nil || on {
		t.Fatalf("PowerState: %t, %v", on, err)
	}
	if err := c.SetBootOnce(ctx, "Cd"); err == nil {
		t.Fatal("SetBootOnce(Cd) succeeded")
	}
}
