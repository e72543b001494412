package status_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/coordinator/powerctl"
	"github.com/rivetmetal/rivet/coordinator/status/statustest"
	"github.com/rivetmetal/rivet/shared"
)

const pageBMCSecret = "page-bmc-S3cret"

type pageBMC struct {
	mu    sync.Mutex
	calls []string
}

func (b *pageBMC) note(s string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, s)
	return nil
}
func (b *pageBMC) Status(context.Context) (power.State, error) {
	return power.StateOn, b.note("status")
}
func (b *pageBMC) On(context.Context) error    { return b.note("on") }
func (b *pageBMC) Off(context.Context) error   { return b.note("off") }
func (b *pageBMC) Cycle(context.Context) error { return b.note("cycle") }
func (b *pageBMC) SetBootDevice(_ context.Context, d power.BootDevice) error {
	return b.note("boot " + string(d))
}

// pageTargets gives every machine of the coordinator's store one BMC.
type pageTargets struct{ c *coordinatortest.InProcess }

func (p *pageTargets) PowerTarget(ref string) (powerctl.Target, error) {
	m, ok := p.c.Server.Store().Machine(shared.MachineID(ref))
	if !ok {
		return powerctl.Target{}, fmt.Errorf("%q: %w", ref, powerctl.ErrUnknownTarget)
	}
	return powerctl.Target{MachineID: m.ID, BMC: shared.BMC{Driver: shared.BMCIPMI, Address: "10.7.0.1", User: "root", Password: pageBMCSecret}}, nil
}

func (p *pageTargets) PowerTargets(map[string]string, bool) ([]powerctl.Target, error) {
	return nil, nil
}

// TestPowerButtons: an admin's machine page has power buttons that carry the CSRF
// token and reach the BMC, the answer is shown and on the timeline; a viewer sees no
// button, no BMC and no password, and is refused a power post.
func TestPowerButtons(t *testing.T) {
	bmc := &pageBMC{}
	targets := &pageTargets{}
	c := startCoordinator(t, func(dc *coordinator.DaemonConfig) {
		dc.Power = coordinator.PowerOptions{Resolver: targets,
			Drivers: func(b shared.BMC) (power.Driver, error) {
				if b.Password != pageBMCSecret {
					return nil, fmt.Errorf("wrong password")
				}
				return bmc, nil
			}}
	})
	targets.c = c
	f, err := statustest.Register(context.Background(), c, 1, 1, func(int) map[string]string { return nil })
	if err != nil {
		t.Fatal(err)
	}
	id := string(f.Machines[0].ID)
	page := c.URL + "/status/machines/" + id

	viewer := browser(t, c)
	login(t, c, viewer, viewerToken(t, c))
	_, html := get(t, viewer, page)
	if !strings.Contains(html, "vera (viewer)") || strings.Contains(html, "/power/") || strings.Contains(html, "10.7.0.1") {
		t.Fatalf("viewer's page shows power buttons or the BMC:\n%s", html)
	}
	csrf := csrfField.FindStringSubmatch(html)
	resp := postForm(t, viewer, page+"/power/on", url.Values{"csrf": {csrf[1]}}, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer's power on: %d, want 403", resp.StatusCode)
	}

	admin := browser(t, c)
	login(t, c, admin, c.AdminToken)
	_, html = get(t, admin, page)
	if !strings.Contains(html, "/status/machines/"+id+"/power/cycle") || !strings.Contains(html, `name="pxe_once" value="1"`) ||
		!strings.Contains(html, "ipmi root@10.7.0.1") {
		t.Fatalf("admin's page lacks the power buttons:\n%s", html)
	}
	resp = postForm(t, admin, page+"/power/cycle", url.Values{}, nil)
	if resp.StatusCode != http.StatusForbidden || len(bmc.calls) != 0 {
		t.Fatalf("a power post without the CSRF token: %d, BMC calls %v", resp.StatusCode, bmc.calls)
	}
	csrf = csrfField.FindStringSubmatch(html)
	resp = postForm(t, admin, page+"/power/cycle", url.Values{"csrf": {csrf[1]}, "pxe_once": {"1"}}, nil)
	where := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(where, "done=") {
		t.Fatalf("admin's power cycle: %d to %s", resp.StatusCode, where)
	}
	if got := strings.Join(bmc.calls, ","); got != "boot pxe,cycle,status" {
		t.Fatalf("BMC calls %s", got)
	}
	_, html = get(t, admin, c.URL+where)
	if !strings.Contains(html, "the BMC reports power on") || !strings.Contains(html, "power cycle (PXE once) by ") {
		t.Fatalf("the page after the cycle lacks the answer or the timeline event:\n%s", html)
	}
	_, viewed := get(t, viewer, page)
	for what, text := range map[string]string{"admin's page": html, "viewer's page": viewed} {
		if !strings.Contains(text, "BMC reports power on") || strings.Contains(text, pageBMCSecret) {
			t.Fatalf("%s (want the timeline's power event, never the password):\n%s", what, text)
		}
	}
}
