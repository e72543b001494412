package integration

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/status/statustest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestStatusPagesInABrowser is issue 7's proof: Debian's chromium, headless, against a
// coordinator holding 200 machines in mixed states, driven there through the real API.
// The fleet page's counts equal the API's; a state change shows on the open page within
// 2 s without a reload; no secret is in any page's HTML or in the event stream; a
// viewer's action is refused; the pages carry HSTS, and after a logout going back shows
// the login form. Screenshots of the fleet page and a machine page are saved
// under build/artifacts/.
func TestStatusPagesInABrowser(t *testing.T) {
	chromium := testenv.RequireCommand(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	logs := &testenv.LogBuffer{}
	dc := coordinator.DaemonConfig{Plan: coordinator.PlanOptions{Settle: 100 * time.Millisecond, MaxWait: 2 * time.Second}}
	c, err := coordinatortest.StartInProcess(ctx, t.TempDir(), slog.New(slog.NewTextHandler(logs, nil)), dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	f, err := statustest.Mixed(ctx, c, 200)
	if err != nil {
		t.Fatal(err)
	}
	admin := c.Client(c.AdminToken)
	viewer, err := admin.CreateToken(ctx, &shared.TokenRequest{Name: "vera", Role: shared.TokenViewer})
	if err != nil {
		t.Fatal(err)
	}
	secrets := clusterSecrets(t, c, f)
	stream := recordStream(ctx, t, c)

	browser := newBrowser(ctx, t, chromium)
	loginAs(t, browser, c.URL, c.AdminToken)

	// 1. The page's counts are the API's.
	apiCounts := countByState(t, admin)
	for _, st := range shared.States {
		text, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS(`.counts .n[data-state="`+string(st)+`"]`)))
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.Atoi(text); n != apiCounts[st] {
			t.Errorf("fleet page shows %s %s machines, the API %d", text, st, apiCounts[st])
		}
	}
	tiles, err := chromedp.Run(browser, chromedp.Evaluate[int](`document.querySelectorAll("#grid a.t").length`))
	if err != nil {
		t.Fatal(err)
	}
	if tiles != 200 {
		t.Errorf("the grid has %d tiles, want 200", tiles)
	}

	// 2. A state change shows within 2 s, without a reload (the marker survives).
	var target *statustest.Machine
	for _, m := range f.Machines {
		if got, _ := admin.Machine(ctx, m.ID); got != nil && got.State == shared.StatePlanned {
			target = m
			break
		}
	}
	if target == nil {
		t.Fatal("no planned machine in the mixed fleet")
	}
	if _, err := chromedp.Run(browser, chromedp.Evaluate[int](`window.rivetMarker = 42`)); err != nil {
		t.Fatal(err)
	}
	waitLive(t, browser)
	if err := target.Provisioning(ctx, 37); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	testenv.Eventually(t, 30*time.Second, "the open fleet page to show "+string(target.ID)+" provisioning", func() error {
		class, err := chromedp.Run(browser, chromedp.Evaluate[string](`document.getElementById("`+string(target.ID)+`").className`))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(class, "provisioning") {
			return fmt.Errorf("tile class %q", class)
		}
		return nil
	})
	t.Logf("rivet-figure: state change visible on the open fleet page after %s", time.Since(changed).Round(time.Millisecond))
	marker, err := chromedp.Run(browser, chromedp.Evaluate[int](`window.rivetMarker`))
	if err != nil {
		t.Fatal(err)
	}
	provisioning, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS(`.counts .n[data-state="provisioning"]`)))
	if err != nil {
		t.Fatal(err)
	}
	if marker != 42 {
		t.Error("the page reloaded to show the change; it should patch itself")
	}
	if want := strconv.Itoa(apiCounts[shared.StateProvisioning] + 1); provisioning != want {
		t.Errorf("provisioning count on the page is %s after the change, want %s", provisioning, want)
	}

	// A machine that registers while the page is open gets its tile.
	res, err := c.Client(c.EnrolToken).Register(ctx, coordinatortest.RegisterRequest(201))
	if err != nil {
		t.Fatal(err)
	}
	registered := time.Now()
	testenv.Eventually(t, 30*time.Second, "a tile for the newly registered "+string(res.Machine.ID), func() error {
		n, err := chromedp.Run(browser, chromedp.Evaluate[int](`document.querySelectorAll("#grid a.t").length`))
		if err != nil {
			t.Fatal(err)
		}
		if n != 201 {
			return fmt.Errorf("%d tiles, want 201", n)
		}
		return nil
	})
	t.Logf("rivet-figure: new machine's tile on the open fleet page after %s", time.Since(registered).Round(time.Millisecond))

	// 3. Screenshots, and no secret in any page's HTML or in the stream.
	artifacts := filepath.Join(repoRoot(), "build", "artifacts")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	html := map[string]string{}
	html["fleet"] = screenshot(t, browser, "", filepath.Join(artifacts, "status-fleet.png"))
	failed := firstInState(t, admin, shared.StateFailed)
	html["machine"] = screenshot(t, browser, c.URL+"/status/machines/"+string(failed), filepath.Join(artifacts, "status-machine.png"))
	if !strings.Contains(html["machine"], "What to do next") {
		t.Error("the failed machine's page does not say what to do next")
	}
	html["cluster"] = screenshot(t, browser, c.URL+"/status/cluster", filepath.Join(artifacts, "status-cluster.png"))
	html["roles"] = screenshot(t, browser, c.URL+"/status/roles", filepath.Join(artifacts, "status-roles.png"))
	html["target"] = pageHTML(t, browser, c.URL+"/status/machines/"+string(target.ID))

	// The machine page follows its machine live too.
	if _, err := chromedp.Run(browser, chromedp.Evaluate[int](`window.rivetMarker = 7`)); err != nil {
		t.Fatal(err)
	}
	waitLive(t, browser)
	plan, err := target.Client.Plan(ctx, target.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := target.Report(ctx, plan.Plan.Steps[1].Name, shared.StepRunning,
		&shared.Progress{Done: 83, Total: 100, BytesPerSec: 1 << 20}, ""); err != nil {
		t.Fatal(err)
	}
	reported := time.Now()
	testenv.Eventually(t, 30*time.Second, "the machine page to show the new progress", func() error {
		// The live update replaces the table; a query that races it finds its node gone
		// ("No node with given id found") and simply looks again.
		text, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS(`table.steps`)))
		if err != nil {
			return err
		}
		if !strings.Contains(text, "83%") {
			return fmt.Errorf("steps table:\n%s", text)
		}
		return nil
	})
	t.Logf("rivet-figure: new progress on the open machine page after %s", time.Since(reported).Round(time.Millisecond))
	if marker, _ := chromedp.Run(browser, chromedp.Evaluate[int](`window.rivetMarker`)); marker != 7 {
		t.Error("the machine page reloaded to show the change")
	}
	html["event stream"] = stream()
	if !strings.Contains(html["event stream"], string(target.ID)) {
		t.Error("the event stream never carried the changed machine")
	}
	for where, text := range html {
		for name, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("the %s appears in the %s", name, where)
			}
		}
	}

	// 4. A viewer sees, but an action is refused even when forged from the page.
	viewerTab := newBrowser(ctx, t, chromium)
	loginAs(t, viewerTab, c.URL, viewer.Secret)
	page := pageHTML(t, viewerTab, c.URL+"/status/machines/"+string(failed))
	if strings.Contains(page, "/actions/retry") {
		t.Error("a viewer's machine page shows action buttons")
	}
	forge := `(async () => { const csrf = document.querySelector('input[name=csrf]').value;
		const r = await fetch('/status/machines/` + string(failed) + `/actions/retry',
			{method: 'POST', body: new URLSearchParams({csrf}), redirect: 'manual'}); return r.status; })()`
	code, err := chromedp.Run(viewerTab, chromedp.Evaluate[int](forge, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if code != 403 {
		t.Errorf("a viewer's retry got HTTP %d, want 403", code)
	}
	if m, _ := admin.Machine(ctx, failed); m == nil || m.State != shared.StateFailed {
		t.Error("a viewer's refused retry changed the machine")
	}

	// 5. The pages come with HSTS; after a logout, going back shows the login form.
	resp, err := chromedp.RunResponse(browser, chromedp.Navigate(c.URL+"/status/roles"))
	if err != nil {
		t.Fatal(err)
	}
	if hsts := headerValue(resp.Headers, "Strict-Transport-Security"); hsts != "max-age=31536000" {
		t.Errorf("the roles page came with Strict-Transport-Security %q", hsts)
	}
	if err := chromedp.Do(browser, chromedp.Click(chromedp.CSS(`form.who button`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name=token]`))); err != nil {
		t.Fatalf("logging out in the browser: %v", err)
	}
	if err := chromedp.Do(browser, chromedp.NavigateBack(), chromedp.WaitVisible(chromedp.CSS(`input[name=token]`))); err != nil {
		t.Fatalf("going back after the logout did not show the login form: %v", err)
	}
	if who, _ := chromedp.Run(browser, chromedp.Evaluate[int](`document.querySelectorAll(".who span").length`)); who != 0 {
		t.Error("a page after the logout still names the operator")
	}
	if t.Failed() {
		t.Logf("coordinator log:\n%s", logs.String())
	}
}

// headerValue reads a response header from the browser's record of it, whatever the
// case its name arrived in (HTTP/2 sends lower case).
func headerValue(h map[string]any, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return fmt.Sprint(v)
		}
	}
	return ""
}

// clusterSecrets is every secret the coordinator holds, with the swarm's tokens set.
func clusterSecrets(t *testing.T, c *coordinatortest.InProcess, f *statustest.Fleet) map[string]string {
	t.Helper()
	swarmToken := "SWMTKN-1-" + strings.Repeat("9f", 25)
	if err := c.PlantSwarm("cl5", swarmToken+"-mgr", swarmToken+"-wrk"); err != nil {
		t.Fatal(err)
	}
	cl := c.Server.Store().Cluster()
	s := map[string]string{"admin token": c.AdminToken, "enrol token": c.EnrolToken, "gossip key": cl.GossipKey,
		"token secret": cl.TokenSecret, "CA key": cl.CAKeyPEM[40:100], "swarm manager token": swarmToken + "-mgr",
		"swarm worker token": swarmToken + "-wrk"}
	for _, m := range f.Machines {
		s["machine token of "+string(m.ID)] = m.Token
	}
	return s
}

// recordStream reads the event stream as an admin script would, until the returned
// function is called; that function returns everything read.
func recordStream(ctx context.Context, t *testing.T, c *coordinatortest.InProcess) func() string {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	resp, err := c.Client(c.AdminToken).Open(ctx, "/status/events", nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		buf strings.Builder
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			mu.Lock()
			buf.WriteString(sc.Text() + "\n")
			mu.Unlock()
		}
	}()
	t.Cleanup(cancel)
	return func() string {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
}

func newBrowser(ctx context.Context, t *testing.T, chromium string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium),
		chromedp.Flag("ignore-certificate-errors", true), chromedp.NoSandbox,
		chromedp.WindowSize(1400, 1000), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil {
		testenv.Missing(t, "chromium did not start: %v", err)
	}
	return bctx
}

func loginAs(t *testing.T, b context.Context, base, token string) {
	t.Helper()
	err := chromedp.Do(b, chromedp.Navigate(base+"/status/"),
		chromedp.WaitVisible(chromedp.CSS(`input[name=token]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=token]`), token),
		chromedp.Submit(chromedp.CSS(`input[name=token]`)),
		chromedp.WaitVisible(chromedp.CSS(`.who span`)))
	if err != nil {
		t.Fatalf("logging in: %v", err)
	}
}

// waitLive waits until the page's event stream is connected.
func waitLive(t *testing.T, b context.Context) {
	t.Helper()
	if err := chromedp.Do(b, chromedp.WaitVisible(chromedp.CSS(`#live`))); err != nil {
		t.Fatalf("the page never connected to the event stream: %v", err)
	}
}

// screenshot navigates to url (unless empty), saves a full-page PNG and returns the HTML.
func screenshot(t *testing.T, b context.Context, url, path string) string {
	t.Helper()
	if url != "" {
		if err := chromedp.Do(b, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`#main`))); err != nil {
			t.Fatal(err)
		}
	}
	png, err := chromedp.Run(b, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	html, err := chromedp.Run(b, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("status page screenshot: %s\n", path)
	t.Logf("screenshot saved: %s", path)
	return html
}

func pageHTML(t *testing.T, b context.Context, url string) string {
	t.Helper()
	if err := chromedp.Do(b, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`#main`))); err != nil {
		t.Fatal(err)
	}
	html, err := chromedp.Run(b, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	return html
}

func countByState(t *testing.T, c *shared.Client) map[shared.State]int {
	t.Helper()
	ms, err := c.Machines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[shared.State]int{}
	for _, m := range ms {
		out[m.State]++
	}
	return out
}

func firstInState(t *testing.T, c *shared.Client, st shared.State) shared.MachineID {
	t.Helper()
	ms, err := c.Machines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.State == st {
			return m.ID
		}
	}
	t.Fatalf("no %s machine", st)
	return ""
}
