package status_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/fsm"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/coordinator/status"
	"github.com/rivetmetal/rivet/coordinator/status/statustest"
	"github.com/rivetmetal/rivet/shared"
)

// postForm posts a form from the browser b with extra headers.
func postForm(t *testing.T, b *http.Client, target string, form url.Values, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// withCookie is a browser without a jar that presents one saved cookie, as an attacker
// replaying it would.
func withCookie(t *testing.T, c *coordinatortest.InProcess, cookie *http.Cookie) (*http.Client, func(*http.Request)) {
	b := browser(t, c)
	b.Jar = nil
	return b, func(r *http.Request) { r.AddCookie(cookie) }
}

func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, ck := range resp.Cookies() {
		if ck.Name == "rivet_status" && ck.Value != "" {
			return ck
		}
	}
	t.Fatalf("no session cookie in the answer (%d)", resp.StatusCode)
	return nil
}

// TestLogoutEndsTheSession: an admin logs in, acts, opens the event stream and logs out;
// the saved cookie is then refused for a page and for an action, the action changes
// nothing, and the open event stream ends instead of carrying the next change. The
// cookie holds no part of the token's secret.
func TestLogoutEndsTheSession(t *testing.T) {
	c := startCoordinator(t)
	ctx := context.Background()
	f, err := statustest.Register(ctx, c, 1, 3, func(int) map[string]string { return nil })
	if err != nil {
		t.Fatal(err)
	}
	admin := browser(t, c)
	resp := login(t, c, admin, c.AdminToken)
	cookie := sessionCookie(t, resp)
	if _, secret, _ := strings.Cut(strings.TrimPrefix(c.AdminToken, "rvo_"), "_"); strings.Contains(cookie.Value, secret) {
		t.Fatal("the session cookie contains the token's secret")
	}
	_, page := get(t, admin, c.URL+"/status/machines/"+string(f.Machines[0].ID))
	csrf := csrfField.FindStringSubmatch(page)
	if csrf == nil {
		t.Fatal("no CSRF field on the machine page")
	}
	resp = postForm(t, admin, c.URL+"/status/machines/"+string(f.Machines[0].ID)+"/actions/retire", url.Values{"csrf": {csrf[1]}}, nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "done=retire") {
		t.Fatalf("admin's retire before logout: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	stream := openCookieStream(t, c, cookie)

	resp = postForm(t, admin, c.URL+"/status/logout", url.Values{"csrf": {csrf[1]}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/status/login" {
		t.Fatalf("logout: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	replay, add := withCookie(t, c, cookie)
	req, _ := http.NewRequest(http.MethodGet, c.URL+"/status/", nil)
	add(req)
	resp, err = replay.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/status/login") {
		t.Fatalf("fleet page with the logged-out cookie: %d %s, want the login form", resp.StatusCode, resp.Header.Get("Location"))
	}
	target := f.Machines[1].ID
	before, _ := c.Client(c.AdminToken).Machine(ctx, target)
	req, _ = http.NewRequest(http.MethodPost, c.URL+"/status/machines/"+string(target)+"/actions/retire",
		strings.NewReader(url.Values{"csrf": {csrf[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	add(req)
	if resp, err = replay.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("action with the logged-out cookie: %d, want 401", resp.StatusCode)
	}
	after, _ := c.Client(c.AdminToken).Machine(ctx, target)
	if after.State != before.State || after.UpdatedAt != before.UpdatedAt {
		t.Fatalf("a refused action changed %s: %s → %s", target, before.State, after.State)
	}

	// A change after the logout: the stream opened with the cookie must not carry it.
	late, err := c.Client(c.EnrolToken).Register(ctx, coordinatortest.RegisterRequest(77))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case text := <-stream:
		if strings.Contains(text, string(late.Machine.ID)) {
			t.Fatalf("the logged-out session's stream carried a machine registered after the logout:\n%s", text)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the logged-out session's event stream is still open 20 s after the next change")
	}

	// Logging in again works, with a cookie of its own.
	if fresh := sessionCookie(t, login(t, c, browser(t, c), c.AdminToken)); fresh.Value == cookie.Value {
		t.Fatal("a new login gave the logged-out cookie back")
	}
	if n := metric(t, c, `rivet_auth_failures_total{reason="ended_session",surface="pages"}`); n < 2 {
		t.Errorf("ended sessions counted %v times, want at least 2", n)
	}
}

// openCookieStream opens the event stream with a cookie; the channel gets everything
// read once the stream ends.
func openCookieStream(t *testing.T, c *coordinatortest.InProcess, cookie *http.Cookie) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b, add := withCookie(t, c, cookie)
	b.Timeout = 0
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/status/events", nil)
	add(req)
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("event stream with a live session: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatal("the event stream sent nothing")
	}
	out := make(chan string, 1)
	go func() {
		defer resp.Body.Close()
		var all strings.Builder
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
		}
		out <- all.String()
	}()
	return out
}

// TestLoginRefusesForeignForms: a login posted from another site (Origin, or the
// browser's Sec-Fetch-Site) is refused with the right token and sets no cookie.
func TestLoginRefusesForeignForms(t *testing.T) {
	c := startCoordinator(t)
	for _, hdr := range []map[string]string{
		{"Origin": "https://evil.example"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Origin": "null"},
	} {
		resp := postForm(t, browser(t, c), c.URL+"/status/login", url.Values{"token": {c.AdminToken}}, hdr)
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("login with %v: %d, cookies %v; want 403 and none", hdr, resp.StatusCode, resp.Cookies())
		}
	}
	u, _ := url.Parse(c.URL)
	resp := postForm(t, browser(t, c), c.URL+"/status/login", url.Values{"token": {c.AdminToken}},
		map[string]string{"Origin": "https://" + u.Host, "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login from our own form: %d, want 303", resp.StatusCode)
	}
	if n := metric(t, c, `rivet_auth_failures_total{reason="foreign_origin",surface="login"}`); n != 3 {
		t.Errorf("foreign logins counted %v times, want 3", n)
	}
}

// TestBadLoginsAndTokensAreThrottled: twenty bad logins from one address get 429 with
// Retry-After once the burst is spent, and then even the right token is refused from
// there; bad bearer tokens on the API are throttled the same way. The counters move and
// never carry the token presented.
func TestBadLoginsAndTokensAreThrottled(t *testing.T) {
	c := startCoordinator(t)
	b := browser(t, c)
	guess := "rvo_" + strings.Repeat("ab", 6) + "_" + strings.Repeat("cd", 24)
	codes := map[int]int{}
	var retryAfter string
	for range 20 {
		resp := postForm(t, b, c.URL+"/status/login", url.Values{"token": {guess}}, nil)
		codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests {
			retryAfter = resp.Header.Get("Retry-After")
		}
	}
	if codes[http.StatusUnauthorized] == 0 || codes[http.StatusTooManyRequests] == 0 || codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != 20 {
		t.Fatalf("20 bad logins answered %v, want some 401 then 429", codes)
	}
	if s, err := strconv.Atoi(retryAfter); err != nil || s < 1 {
		t.Fatalf("429 without a usable Retry-After: %q", retryAfter)
	}
	if resp := login(t, c, b, c.AdminToken); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the right token from a throttled address: %d, want 429 (it must not be checked)", resp.StatusCode)
	}
	if n := metric(t, c, `rivet_auth_failures_total{reason="unknown",surface="login"}`); n != float64(codes[http.StatusUnauthorized]) {
		t.Errorf("login failures counted %v, want %d", n, codes[http.StatusUnauthorized])
	}
	if n := metric(t, c, `rivet_auth_throttled_total{surface="login"}`); n != float64(codes[http.StatusTooManyRequests]+1) {
		t.Errorf("throttled logins counted %v, want %d", n, codes[http.StatusTooManyRequests]+1)
	}
	// The API shares the budget: this address has spent it.
	_, err := c.Client(guess).Machines(context.Background())
	if shared.StatusOf(err) != http.StatusTooManyRequests || shared.CodeOf(err) != shared.CodeRateLimited {
		t.Fatalf("API call with a bad token from the throttled address: %v, want 429 rate_limited", err)
	}
	if text := metricsText(t, c); strings.Contains(text, guess) || strings.Contains(text, "abababab") {
		t.Fatal("the metrics carry the presented token")
	}
}

// TestSecurityHeaders: every HTTPS answer carries HSTS, pages their CSP and friends.
func TestSecurityHeaders(t *testing.T) {
	c := startCoordinator(t)
	b := browser(t, c)
	for _, path := range []string{"/status/login", "/status/", shared.PathHealth, "/status/static/status.css"} {
		resp, err := b.Get(c.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
			t.Errorf("%s: Strict-Transport-Security %q", path, got)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q", path, got)
		}
		if strings.HasPrefix(path, "/status/") {
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'self'") {
				t.Errorf("%s: Content-Security-Policy %q", path, csp)
			}
			if rp := resp.Header.Get("Referrer-Policy"); rp == "" {
				t.Errorf("%s: no Referrer-Policy", path)
			}
		}
	}
}

func metricsText(t *testing.T, c *coordinatortest.InProcess) string {
	t.Helper()
	text, err := c.Client("").Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// metric reads one sample of the coordinator's /metrics (0 when absent).
func metric(t *testing.T, c *coordinatortest.InProcess, series string) float64 {
	t.Helper()
	v, _ := shared.MetricSample(metricsText(t, c), series)
	return v
}

// fsmBackend applies commands straight to a store, in order, as Raft would on one node.
type fsmBackend struct {
	mu    sync.Mutex
	store *state.Store
	index uint64
}

func (b *fsmBackend) Store() *state.Store     { return b.store }
func (b *fsmBackend) Members() shared.Members { return shared.Members{} }
func (b *fsmBackend) Apply(_ context.Context, body state.Command) (state.Result, error) {
	data, err := fsm.Encode(body)
	if err != nil {
		return state.Result{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.index++
	out := fsm.Apply(b.store, data, b.index)
	return out.Result, out.Err
}

// TestSessionsLastEightHoursAtMost: with the pages' clock moved on (no sleeping), a
// session works just before 8 h and is refused from 8 h on, even when the pages are
// configured for longer; a cookie whose issue time was edited is refused as forged.
func TestSessionsLastEightHoursAtMost(t *testing.T) {
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	store := state.New()
	backend := &fsmBackend{store: store}
	tok, bearer := auth.NewToken("alice", shared.TokenAdmin, now)
	if _, err := backend.Apply(context.Background(), state.InitCluster{AdminToken: tok,
		Cluster: state.Cluster{CACertPEM: "ca", TokenSecret: auth.NewSecret(32)}}); err != nil {
		t.Fatal(err)
	}
	throttle := auth.NewThrottle(auth.ThrottleConfig{})
	h := status.New(status.Config{Backend: backend, SessionTTL: 24 * time.Hour, Throttle: throttle,
		Now: func() time.Time { return now }})

	req := httptest.NewRequest(http.MethodPost, "https://rivet.test/status/login", strings.NewReader(url.Values{"token": {bearer}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	cookie := sessionCookie(t, rec.Result())
	if cookie.MaxAge != int(status.MaxSession.Seconds()) {
		t.Errorf("cookie Max-Age %d, want %d", cookie.MaxAge, int(status.MaxSession.Seconds()))
	}
	fleet := func(ck *http.Cookie) int {
		req := httptest.NewRequest(http.MethodGet, "https://rivet.test/status/", nil)
		req.AddCookie(ck)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	start := now
	now = start.Add(status.MaxSession - time.Second)
	if code := fleet(cookie); code != http.StatusOK {
		t.Fatalf("session a second before 8 h: %d, want 200", code)
	}
	now = start.Add(status.MaxSession)
	if code := fleet(cookie); code != http.StatusSeeOther {
		t.Fatalf("session at 8 h: %d, want a redirect to the login form", code)
	}
	// Moving the issue time forward breaks the signature.
	parts := strings.Split(cookie.Value, ".")
	parts[3] = strconv.FormatInt(now.Unix(), 10)
	edited := &http.Cookie{Name: cookie.Name, Value: strings.Join(parts, ".")}
	if code := fleet(edited); code != http.StatusSeeOther {
		t.Fatalf("cookie with an edited issue time: %d, want refused", code)
	}
}
