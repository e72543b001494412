package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/shared"
)

// TestLoggedOutCookieIsRefusedEverywhere is the attacker's view of status-page sessions
// on three real coordinators. An admin logs in at A, retires a machine, and logs out; the
// saved cookie, replayed at A, B and C, reads no page and performs no action, and the
// target machine's record is unchanged on every coordinator. A login posted from another
// site is refused; twenty bad logins from one address end in 429 and are counted, and
// do not hold up the writes other coordinators forward from that address.
func TestLoggedOutCookieIsRefusedEverywhere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// No planning pass: the machine records stay as the test leaves them.
	cluster := startCluster(ctx, t, coordinatortest.Options{Dir: t.TempDir(),
		Nodes: 3, ExtraArgs: []string{"--plan-settle", "10m"}})
	leader, err := cluster.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A is a follower, so the logout travels to the leader and back.
	a, b, c := orderFollowerFirst(cluster, leader)
	t.Logf("A=%s B=%s C=%s (leader %s)", a.ID, b.ID, c.ID, leader.ID)
	admin := cluster.Client(a)
	var ids []shared.MachineID
	for i := range 2 {
		res, err := admin.Register(ctx, coordinatortest.RegisterRequest(i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Machine.ID)
	}
	acted, target := ids[0], ids[1]
	waitSameDigest(ctx, t, cluster) // A serves what it forwarded

	// The admin's session at A: log in, act, log out.
	browserA := pageClient(cluster, a)
	cookie := pageLogin(t, browserA, a, cluster.AdminToken)
	csrf := pageCSRF(t, browserA, a, cookie, acted)
	if code, loc := pagePost(t, browserA, a, cookie, "/status/machines/"+string(acted)+"/actions/retire", csrf, nil); code != http.StatusSeeOther || !strings.Contains(loc, "done=retire") {
		t.Fatalf("the admin's retire at A: %d %s", code, loc)
	}
	if code, loc := pagePost(t, browserA, a, cookie, "/status/logout", csrf, nil); code != http.StatusSeeOther || loc != "/status/login" {
		t.Fatalf("logout at A: %d %s", code, loc)
	}
	waitSameDigest(ctx, t, cluster) // B and C have applied the logout
	before := recordDigests(ctx, t, cluster, target)

	// The attacker replays the saved cookie everywhere.
	for _, n := range []*coordinatortest.Node{a, b, c} {
		replay := pageClient(cluster, n)
		for _, path := range []string{"/status/", "/status/machines/" + string(target)} {
			code, loc := pageGet(t, replay, n, cookie, path)
			if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/status/login") {
				t.Errorf("GET %s at %s with the logged-out cookie: %d %q, want the login form", path, n.ID, code, loc)
			}
		}
		if code, _ := pagePost(t, replay, n, cookie, "/status/machines/"+string(target)+"/actions/retire", csrf, nil); code != http.StatusUnauthorized {
			t.Errorf("retire at %s with the logged-out cookie: %d, want 401", n.ID, code)
		}
	}
	waitSameDigest(ctx, t, cluster)
	if after := recordDigests(ctx, t, cluster, target); after != before {
		t.Errorf("the target's record changed under the replayed cookie: %s → %s", before, after)
	}

	// A login posted from another site is refused, with the right token.
	form := url.Values{"token": {cluster.AdminToken}}
	if code, _ := pagePost(t, pageClient(cluster, b), b, nil, "/status/login", "", map[string]string{"Origin": "https://evil.example"}, form); code != http.StatusForbidden {
		t.Errorf("login at B posted from another site: %d, want 403", code)
	}

	// Twenty bad logins from one address at C.
	failedBefore := scrape(ctx, t, cluster, c, `rivet_auth_failures_total{reason="unknown",surface="login"}`)
	guess := url.Values{"token": {"rvo_0123456789ab_" + strings.Repeat("ee", 24)}}
	codes := map[int]int{}
	for range 20 {
		code, _ := pagePost(t, pageClient(cluster, c), c, nil, "/status/login", "", nil, guess)
		codes[code]++
	}
	if codes[http.StatusTooManyRequests] == 0 || codes[http.StatusUnauthorized] == 0 {
		t.Errorf("20 bad logins at C answered %v, want 401s then 429s", codes)
	}
	failed := scrape(ctx, t, cluster, c, `rivet_auth_failures_total{reason="unknown",surface="login"}`) - failedBefore
	throttled := scrape(ctx, t, cluster, c, `rivet_auth_throttled_total{surface="login"}`)
	if failed != float64(codes[http.StatusUnauthorized]) || throttled < float64(codes[http.StatusTooManyRequests]) {
		t.Errorf("counters at C: %v failures and %v throttled, for answers %v", failed, throttled, codes)
	}
	fmt.Printf("rivet-figure: bad logins from one address before 429: %d of 20\n", codes[http.StatusUnauthorized])

	// C, the leader, now throttles 127.0.0.1, where the followers forward writes from:
	// their internal token is not held up, so a write through A still goes through.
	if _, err := cluster.Client(a).Register(ctx, coordinatortest.RegisterRequest(9)); err != nil {
		t.Errorf("a write forwarded by A to the leader that throttles A's address: %v", err)
	}
}

// orderFollowerFirst returns the nodes with a follower first.
func orderFollowerFirst(c *coordinatortest.Cluster, leader *coordinatortest.Node) (a, b, cc *coordinatortest.Node) {
	var rest []*coordinatortest.Node
	for _, n := range c.Nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	return rest[0], rest[1], leader
}

// pageClient is a browser for one coordinator without a cookie jar (the test presents
// cookies itself) that does not follow redirects.
func pageClient(c *coordinatortest.Cluster, n *coordinatortest.Node) *http.Client {
	return &http.Client{Transport: c.Client(n).HTTPClient().Transport, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func pageLogin(t *testing.T, b *http.Client, n *coordinatortest.Node, token string) *http.Cookie {
	t.Helper()
	resp, err := b.PostForm(n.URL()+"/status/login", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, ck := range resp.Cookies() {
		if ck.Name == "rivet_status" && ck.Value != "" {
			return &http.Cookie{Name: ck.Name, Value: ck.Value}
		}
	}
	t.Fatalf("login at %s: %d without a session cookie", n.ID, resp.StatusCode)
	return nil
}

var pageCSRFField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func pageCSRF(t *testing.T, b *http.Client, n *coordinatortest.Node, cookie *http.Cookie, id shared.MachineID) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, n.URL()+"/status/machines/"+string(id), nil)
	req.AddCookie(cookie)
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := pageCSRFField.FindSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("machine page at %s: %d without a CSRF field", n.ID, resp.StatusCode)
	}
	return string(m[1])
}

func pageGet(t *testing.T, b *http.Client, n *coordinatortest.Node, cookie *http.Cookie, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, n.URL()+path, nil)
	return pageSend(t, b, req, cookie)
}

// pagePost posts a form (csrf added when given) with an optional cookie and headers.
func pagePost(t *testing.T, b *http.Client, n *coordinatortest.Node, cookie *http.Cookie, path, csrf string, hdr map[string]string, form ...url.Values) (int, string) {
	t.Helper()
	values := url.Values{}
	if len(form) > 0 {
		values = form[0]
	}
	if csrf != "" {
		values.Set("csrf", csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, n.URL()+path, strings.NewReader(values.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return pageSend(t, b, req, cookie)
}

// pageSend sends req with the cookie, if any, and returns the status and the Location.
func pageSend(t *testing.T, b *http.Client, req *http.Request, cookie *http.Cookie) (int, string) {
	t.Helper()
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// recordDigests hashes a machine's record and timeline as each coordinator serves them;
// it fails the test unless all three agree, and returns the one hash.
func recordDigests(ctx context.Context, t *testing.T, c *coordinatortest.Cluster, id shared.MachineID) string {
	t.Helper()
	var first string
	for _, n := range c.Nodes {
		cl := c.Client(n)
		m, err := cl.Machine(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := cl.Events(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal([]any{m, evs})
		sum := sha256.Sum256(js)
		d := hex.EncodeToString(sum[:8])
		if first == "" {
			first = d
		} else if d != first {
			t.Fatalf("%s serves %s's record as %s, another coordinator as %s", n.ID, id, d, first)
		}
	}
	return first
}

// scrape reads one sample from a coordinator's /metrics (0 when absent).
func scrape(ctx context.Context, t *testing.T, c *coordinatortest.Cluster, n *coordinatortest.Node, series string) float64 {
	t.Helper()
	text, err := c.Client(n).Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := shared.MetricSample(text, series)
	return v
}
