package status

import (
	"net/url"
	"strings"

	"github.com/rivetmetal/rivet/coordinator/planner"
)

// failureDomain is the machine label the planner spreads managers over
// (--failure-domain-label): the pages show it, group the fleet by it and filter on it
// under its own name, so the default gives ?rack=r2 and a zone label ?zone=z1.
type failureDomain struct {
	Label   string // the machine label
	Param   string // the fleet page's query parameter
	Heading string // the label, capitalised, for headings
}

// pageParams are the fleet page's own query parameters, which a label may not shadow.
var pageParams = map[string]bool{"state": true, "role": true, "page": true, "per": true}

func newFailureDomain(label string) failureDomain {
	if label == "" {
		label = planner.DefaultDomainLabel
	}
	d := failureDomain{Label: label, Param: label, Heading: strings.ToUpper(label[:1]) + label[1:]}
	if pageParams[label] {
		d.Param = "domain"
	}
	return d
}

// URL is the fleet page filtered to one failure domain.
func (d failureDomain) URL(value string) string {
	return Prefix + "?" + url.Values{d.Param: {value}}.Encode()
}
