package status_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/status/statustest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestPagesUseTheConfiguredFailureDomain: a coordinator that places managers by zone
// (--failure-domain-label zone) heads, groups, filters and streams its fleet by zone, and
// ignores the rack label its machines also carry.
func TestPagesUseTheConfiguredFailureDomain(t *testing.T) {
	c := startCoordinator(t, func(dc *coordinator.DaemonConfig) { dc.Plan.Placement.DomainLabel = "zone" })
	ctx := context.Background()
	f, err := statustest.Register(ctx, c, 1, 4, func(i int) map[string]string {
		return map[string]string{"pool": "none", "zone": fmt.Sprintf("z%d", i%2+1), "rack": "r9"}
	})
	if err != nil {
		t.Fatal(err)
	}
	inZone := func(i int) string { return fmt.Sprintf("z%d", f.Machines[i].Index%2+1) }
	b := browser(t, c)
	login(t, c, b, c.AdminToken)

	_, fleet := get(t, b, c.URL+"/status/")
	for _, want := range []string{`<label>Zone <select name="zone">`, `<option>z1</option>`, `<option>z2</option>`} {
		if !strings.Contains(fleet, want) {
			t.Errorf("fleet page lacks %s", want)
		}
	}
	if strings.Contains(fleet, "<label>Rack") || strings.Contains(fleet, "<option>r9</option>") {
		t.Error("fleet page groups by rack, not the configured zone")
	}

	_, z1 := get(t, b, c.URL+"/status/?zone=z1")
	for i, m := range f.Machines {
		tile := `<a id="` + string(m.ID) + `"`
		if shown := strings.Contains(z1, tile); shown != (inZone(i) == "z1") {
			t.Errorf("?zone=z1: machine %s of zone %s shown %v", m.ID, inZone(i), shown)
		}
	}

	_, page := get(t, b, c.URL+"/status/machines/"+string(f.Machines[0].ID))
	if want := `<th>Zone</th><td><a href="/status/?zone=` + inZone(0) + `">` + inZone(0) + `</a>`; !strings.Contains(page, want) {
		t.Errorf("machine page lacks %s", want)
	}

	events, stop := openEvents(t, c, c.AdminToken)
	defer stop()
	m := f.Machines[1]
	if _, err := c.Client(c.AdminToken).Action(ctx, m.ID, shared.ActionRetire, "test"); err != nil {
		t.Fatal(err)
	}
	var seen []shared.LiveUpdate
	testenv.Eventually(t, 30*time.Second, "a live update of the retired machine", func() error {
		for {
			select {
			case batch := <-events:
				seen = append(seen, batch.Machines...)
			default:
				for _, u := range seen {
					if u.ID == m.ID {
						if u.Domain != inZone(1) {
							t.Fatalf("live update carries domain %q, want the zone %s", u.Domain, inZone(1))
						}
						return nil
					}
				}
				return fmt.Errorf("updates so far: %+v", seen)
			}
		}
	})
}
