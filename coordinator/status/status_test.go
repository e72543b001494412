package status_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/coordinator/status/statustest"
	"github.com/rivetmetal/rivet/shared"
)

// startCoordinator starts an in-process coordinator; tune, if given, adjusts its config.
func startCoordinator(t *testing.T, tune ...func(*coordinator.DaemonConfig)) *coordinatortest.InProcess {
	t.Helper()
	return statustest.Start(t, t.TempDir(), tune...)
}

// browser is an HTTP client with a cookie jar that does not follow redirects.
func browser(t *testing.T, c *coordinatortest.InProcess) *http.Client {
	jar, _ := cookiejar.New(nil)
	base := c.Client("").HTTPClient()
	return &http.Client{Transport: base.Transport, Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, b *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := b.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func login(t *testing.T, c *coordinatortest.InProcess, b *http.Client, token string) *http.Response {
	t.Helper()
	resp, err := b.PostForm(c.URL+"/status/login", url.Values{"token": {token}, "next": {"/status/roles"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func viewerToken(t *testing.T, c *coordinatortest.InProcess) string {
	t.Helper()
	tok, err := c.Client(c.AdminToken).CreateToken(context.Background(), &shared.TokenRequest{Name: "vera", Role: shared.TokenViewer})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Secret
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func TestLoginSessionAndActions(t *testing.T) {
	c := startCoordinator(t)
	ctx := context.Background()
	f, err := statustest.Register(ctx, c, 1, 2, func(int) map[string]string { return map[string]string{"pool": "sim"} })
	if err != nil {
		t.Fatal(err)
	}
	b := browser(t, c)
	resp, err := b.Get(c.URL + "/status/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/status/login") {
		t.Fatalf("anonymous fleet page: %d %s, want a redirect to the login form", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, _ := get(t, b, c.URL+"/status/events"); code != http.StatusUnauthorized {
		t.Fatalf("anonymous event stream: %d, want 401", code)
	}
	if resp := login(t, c, b, c.EnrolToken); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login with the enrolment token: %d, want 401", resp.StatusCode)
	}
	if resp := login(t, c, b, f.Machines[0].Token); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login with a machine token: %d, want 401", resp.StatusCode)
	}

	// A viewer logs in, sees, and is refused an action.
	resp = login(t, c, b, viewerToken(t, c))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/status/roles" {
		t.Fatalf("viewer login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	cookie := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "Secure", "SameSite=Strict", "Path=/status/"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("session cookie %q lacks %s", cookie, want)
		}
	}
	id := f.Machines[0].ID
	code, page := get(t, b, c.URL+"/status/machines/"+string(id))
	if code != http.StatusOK || !strings.Contains(page, "vera (viewer)") || strings.Contains(page, "/actions/retire") {
		t.Fatalf("viewer's machine page: %d, want it without action buttons:\n%s", code, page)
	}
	csrf := csrfField.FindStringSubmatch(page)
	if csrf == nil {
		t.Fatal("no CSRF field on the page (logout form)")
	}
	resp, err = b.PostForm(c.URL+"/status/machines/"+string(id)+"/actions/retire", url.Values{"csrf": {csrf[1]}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer's retire: %d, want 403", resp.StatusCode)
	}

	// An admin acts, but only from a form carrying the session's CSRF token.
	admin := browser(t, c)
	login(t, c, admin, c.AdminToken)
	_, page = get(t, admin, c.URL+"/status/machines/"+string(id))
	if !strings.Contains(page, "/actions/retire") {
		t.Fatalf("admin's machine page has no retire button:\n%s", page)
	}
	csrf = csrfField.FindStringSubmatch(page)
	for _, bad := range []url.Values{{}, {"csrf": {"00000000000000000000000000000000"}}} {
		resp, err = admin.PostForm(c.URL+"/status/machines/"+string(id)+"/actions/retire", bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("retire without the right CSRF token: %d, want 403", resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, c.URL+"/status/machines/"+string(id)+"/actions/retire",
		strings.NewReader(url.Values{"csrf": {csrf[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if resp, err = admin.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("retire from a foreign origin: %d, want 403", resp.StatusCode)
	}
	if m, _ := c.Client(c.AdminToken).Machine(ctx, id); m.State == shared.StateRetired {
		t.Fatal("a refused action changed the machine")
	}
	resp, err = admin.PostForm(c.URL+"/status/machines/"+string(id)+"/actions/retire",
		url.Values{"csrf": {csrf[1]}, "reason": {"bad PSU"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "done=retire") {
		t.Fatalf("admin retire: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	m, err := c.Client(c.AdminToken).Machine(ctx, id)
	if err != nil || m.State != shared.StateRetired {
		t.Fatalf("after retire: %v %v", m.State, err)
	}
	_, page = get(t, admin, c.URL+"/status/machines/"+string(id))
	if !strings.Contains(page, "operator action retire by admin: bad PSU") {
		t.Fatalf("timeline lacks the action:\n%s", page)
	}
	// An action the state refuses says why instead of failing silently.
	resp, err = admin.PostForm(c.URL+"/status/machines/"+string(id)+"/actions/retry", url.Values{"csrf": {csrf[1]}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.Contains(resp.Header.Get("Location"), "failed=") {
		t.Fatalf("retry of a retired machine: redirect %q, want a failure message", resp.Header.Get("Location"))
	}
	// Revoking the token ends the session.
	toks, _ := c.Client(c.AdminToken).Tokens(ctx)
	for _, tok := range toks {
		if tok.Name == "vera" {
			if err := c.Client(c.AdminToken).DeleteToken(ctx, tok.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if code, _ := get(t, b, c.URL+"/status/"); code != http.StatusSeeOther {
		t.Fatalf("revoked viewer's session still works: %d", code)
	}
}

// TestPagesShowTheFleetAndNoSecrets renders every page and the event stream of a mixed
// fleet whose swarm tokens are known, and looks for every secret the cluster holds.
func TestPagesShowTheFleetAndNoSecrets(t *testing.T) {
	c := startCoordinator(t)
	ctx := context.Background()
	f, err := statustest.Mixed(ctx, c, 40)
	if err != nil {
		t.Fatal(err)
	}
	// The swarm's tokens, as the first manager would report them.
	swarmToken := "SWMTKN-1-" + strings.Repeat("a1", 25)
	if err := c.PlantSwarm("cl1", swarmToken+"-mgr", swarmToken+"-wrk"); err != nil {
		t.Fatal(err)
	}
	cl := c.Server.Store().Cluster()
	secrets := map[string]string{"admin token": c.AdminToken, "enrol token": c.EnrolToken,
		"gossip key": cl.GossipKey, "token secret": cl.TokenSecret, "CA key": cl.CAKeyPEM[40:90],
		"manager token": swarmToken + "-mgr", "worker token": swarmToken + "-wrk"}
	for _, m := range f.Machines {
		secrets["machine token of "+string(m.ID)] = m.Token
	}

	admin := browser(t, c)
	login(t, c, admin, c.AdminToken)
	events, stop := openEvents(t, c, c.AdminToken)
	defer stop()
	// A change while the stream is open, so the stream carries machines too.
	if err := f.Machines[2].Report(ctx, "image", shared.StepRunning, &shared.Progress{Done: 1, Total: 2}, ""); err != nil {
		t.Fatal(err)
	}
	batch := <-events

	var all strings.Builder
	pages := []string{"/status/", "/status/?state=failed", "/status/?rack=r2&role=" + statustest.RoleName,
		"/status/cluster", "/status/roles", "/status/login"}
	for _, m := range f.Machines {
		pages = append(pages, "/status/machines/"+string(m.ID))
	}
	for _, p := range pages {
		code, body := get(t, admin, c.URL+p)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", p, code, body)
		}
		all.WriteString(body)
	}
	b, _ := json.Marshal(batch)
	all.Write(b)
	for name, secret := range secrets {
		if secret == "" {
			t.Fatalf("test setup: %s is empty", name)
		}
		if strings.Contains(all.String(), secret) {
			t.Errorf("the %s appears on a status page or in the event stream", name)
		}
	}

	// The fleet page's counts are the API's.
	_, fleet := get(t, admin, c.URL+"/status/")
	api, err := c.Client(c.AdminToken).Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[shared.State]int{}
	for _, m := range api {
		want[m.State]++
	}
	for _, st := range shared.States {
		if got := pageCount(t, fleet, st); got != want[st] {
			t.Errorf("fleet page shows %d %s, the API %d", got, st, want[st])
		}
	}
	for _, st := range []shared.State{shared.StateProvisioning, shared.StateFailed, shared.StateReady, shared.StateRetired} {
		if want[st] == 0 {
			t.Errorf("the mixed fleet has no %s machine", st)
		}
	}
	// Filters narrow the grid.
	_, failedOnly := get(t, admin, c.URL+"/status/?state=failed")
	if n := strings.Count(failedOnly, `class="t failed" href`); n != want[shared.StateFailed] {
		t.Errorf("?state=failed shows %d tiles, want %d", n, want[shared.StateFailed])
	}
	// A failed machine says what to do next; an unmatched one says why it has no plan.
	var failed, unmatched shared.MachineID
	for _, m := range api {
		if m.State == shared.StateFailed && failed == "" {
			failed = m.ID
		}
		if m.State == shared.StateDiscovered && m.Labels["pool"] == "none" {
			unmatched = m.ID
		}
	}
	_, page := get(t, admin, c.URL+"/status/machines/"+string(failed))
	for _, want := range []string{"input/output error", "What to do next", "check the disk", "/actions/retry"} {
		if !strings.Contains(page, want) {
			t.Errorf("failed machine's page lacks %q", want)
		}
	}
	_, page = get(t, admin, c.URL+"/status/machines/"+string(unmatched))
	if !strings.Contains(page, "Not planned") {
		t.Errorf("unmatched machine's page does not say why it has no plan")
	}
	_, page = get(t, admin, c.URL+"/status/roles")
	if !strings.Contains(page, statustest.RoleName) || !strings.Contains(page, string(unmatched)) {
		t.Errorf("roles page lacks the role or the unmatched machine")
	}
}

var countPattern = regexp.MustCompile(`data-state="([a-z]+)">(\d+)<`)

func pageCount(t *testing.T, html string, st shared.State) int {
	for _, m := range countPattern.FindAllStringSubmatch(html, -1) {
		if m[1] == string(st) {
			n, _ := strconv.Atoi(m[2])
			return n
		}
	}
	t.Fatalf("no count for %s on the page", st)
	return 0
}

// openEvents reads the event stream with a bearer token and delivers each batch.
func openEvents(t *testing.T, c *coordinatortest.InProcess, token string, query ...string) (<-chan shared.LiveBatch, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := c.Client(token).Open(ctx, shared.PathLiveEvents+strings.Join(query, ""), nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	out := make(chan shared.LiveBatch, 64)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		// A stream that ends early, or with a malformed batch, shows as the batch a test waits for not coming.
		_ = shared.ReadLiveEvents(resp.Body, func(b shared.LiveBatch) bool { out <- b; return true })
	}()
	return out, cancel
}

// TestLiveUpdatesAreCoalesced sends many progress reports for one machine quickly and
// checks the stream carries at most one update for it per interval.
func TestLiveUpdatesAreCoalesced(t *testing.T) {
	c := startCoordinator(t)
	ctx := context.Background()
	f, err := statustest.Planned(ctx, c, 1, func(int) map[string]string { return map[string]string{"pool": "sim"} })
	if err != nil {
		t.Fatal(err)
	}
	m := f.Machines[0]
	if err := m.Report(ctx, "disk", shared.StepSucceeded, nil, ""); err != nil {
		t.Fatal(err)
	}
	events, stop := openEvents(t, c, c.AdminToken)
	defer stop()
	plan, err := m.Client.Plan(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const reports = 30
	for i := 1; i <= reports; i++ {
		// Straight through Raft: the API lets one progress report per step through per
		// second (tested in coordinator/api); this test is about the pages' coalescing
		// of whatever the store applies.
		rep := shared.StepReport{Generation: plan.Plan.Generation, Step: "image", Status: shared.StepRunning, Attempt: 1,
			Progress: &shared.Progress{Done: int64(i), Total: reports}}
		if _, err := c.Server.Apply(ctx, state.Report{ID: m.ID, Report: rep, Time: time.Now().UTC()}); err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
	}
	sent := time.Since(start)
	// Read until the last report's progress shows up.
	updates := 0
	deadline := time.After(30 * time.Second)
	for {
		select {
		case b := <-events:
			for _, u := range b.Machines {
				if u.ID != m.ID {
					continue
				}
				updates++
				if u.State != shared.StateProvisioning || u.Step != "image" {
					t.Fatalf("update %+v, want provisioning in step image", u)
				}
				if u.Percent == 100 {
					elapsed := time.Since(start)
					// One update per second at most, plus the first one.
					if limit := int(elapsed/time.Second) + 1; updates > limit {
						t.Fatalf("%d updates in %s for one machine, want at most %d", updates, elapsed, limit)
					}
					t.Logf("%d reports in %s arrived as %d updates", reports, sent, updates)
					return
				}
			}
		case <-deadline:
			t.Fatalf("the last progress report never arrived on the stream (%d updates)", updates)
		}
	}
}

// TestMachineStreamCarriesOnlyItsMachine checks ?machine= narrows the stream, and that
// the pages refresh themselves without JavaScript.
func TestMachineStreamCarriesOnlyItsMachine(t *testing.T) {
	c := startCoordinator(t)
	ctx := context.Background()
	f, err := statustest.Register(ctx, c, 1, 2, func(int) map[string]string { return map[string]string{"pool": "none"} })
	if err != nil {
		t.Fatal(err)
	}
	a, b := f.Machines[0], f.Machines[1]
	events, stop := openEvents(t, c, c.AdminToken, "?machine="+string(a.ID))
	defer stop()
	admin := c.Client(c.AdminToken)
	if _, err := admin.Action(ctx, b.ID, shared.ActionRetire, "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Action(ctx, a.ID, shared.ActionRetire, "second"); err != nil {
		t.Fatal(err)
	}
	select {
	case batch := <-events:
		if len(batch.Machines) != 1 || batch.Machines[0].ID != a.ID || batch.Machines[0].State != shared.StateRetired {
			t.Fatalf("machine stream carried %+v, want only %s retired", batch.Machines, a.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no update for the machine")
	}

	br := browser(t, c)
	login(t, c, br, c.AdminToken)
	_, page := get(t, br, c.URL+"/status/")
	if !strings.Contains(page, `<noscript><meta http-equiv="refresh"`) {
		t.Error("the fleet page does not refresh itself without JavaScript")
	}
	if code, _ := get(t, br, c.URL+"/status/events?machine=../x"); code != http.StatusBadRequest {
		t.Errorf("bad machine filter: HTTP %d, want 400", code)
	}
}
