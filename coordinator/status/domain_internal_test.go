package status

import "testing"

func TestFailureDomainNamesItsFilterAfterTheLabel(t *testing.T) {
	for _, c := range []struct{ label, param, heading, url string }{
		{"", "rack", "Rack", "/status/?rack=r2"}, // the planner's default
		{"zone", "zone", "Zone", "/status/?zone=r2"},
		{"role", "domain", "Role", "/status/?domain=r2"}, // would shadow the role filter
		{"site.example/row", "site.example/row", "Site.example/row", "/status/?site.example%2Frow=r2"},
	} {
		d := newFailureDomain(c.label)
		if d.Param != c.param || d.Heading != c.heading || d.URL("r2") != c.url {
			t.Errorf("label %q: param %q heading %q url %q, want %q %q %q", c.label, d.Param, d.Heading, d.URL("r2"), c.param, c.heading, c.url)
		}
	}
}
