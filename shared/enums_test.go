package shared

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestEnumsKeepTheirWireValues: typing the vocabularies changed no JSON byte.
func TestEnumsKeepTheirWireValues(t *testing.T) {
	got, err := json.Marshal(struct {
		M AgentMode
		R TokenRole
		A Action
		H HealthStatus
	}{ModeService, TokenEnrol, ActionApprove, HealthDegraded})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"M":"service","R":"enrol","A":"approve","H":"degraded"}`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestEnumsRejectUnknownValuesByName(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{AgentMode("disk").Validate(), `mode "disk": want ram or service`},
		{TokenRole("root").Validate(), `role "root": want admin, viewer or enrol`},
		{Action("reboot").Validate(), `action "reboot": want retry, replan, release, retire or approve`},
		{HealthStatus("fine").Validate(), `health status "fine": want ok or degraded`},
		{TokenRole("").Validate(), `role "": want`},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("got %v, want %q", c.err, c.want)
		}
	}
	allValid(t, AgentModes)
	allValid(t, TokenRoles)
	allValid(t, Actions)
	allValid(t, HealthStatuses)
}

// TestRequestsValidateTheirEnums: a request naming an unknown value is refused.
func TestRequestsValidateTheirEnums(t *testing.T) {
	if err := (&TokenRequest{Name: "ops", Role: "root"}).Validate(); err == nil {
		t.Error("a token request for role root was accepted")
	}
	if err := (&CheckinRequest{Mode: "disk"}).Validate(); err == nil {
		t.Error("a check-in in mode disk was accepted")
	}
}

func allValid[T interface {
	~string
	Validate() error
}](t *testing.T, values []T) {
	t.Helper()
	for _, v := range values {
		if v.Validate() != nil {
			t.Errorf("%s refused", v)
		}
	}
}
