package shared

import (
	"strings"
	"testing"
)

func TestTagsRoundTrip(t *testing.T) {
	for _, tags := range []Tags{
		{Kind: KindAgent, MachineID: "m-0123456789abcdef", State: StateProvisioning, Step: "image", Version: "v0.3.1"},
		{Kind: KindAgent, MachineID: "m-0123456789abcdef"},
		{Kind: KindCoordinator, API: "10.0.0.1:7443", Version: "dev"},
	} {
		got, err := ParseTags(tags.Map())
		if err != nil {
			t.Errorf("ParseTags(%v): %v", tags.Map(), err)
			continue
		}
		if got != tags {
			t.Errorf("round trip: %+v, want %+v", got, tags)
		}
		for k, v := range tags.Map() {
			if v == "" && k != tagKind {
				t.Errorf("Map carries the empty tag %q", k)
			}
		}
	}
}

func TestParseTagsRejects(t *testing.T) {
	agent := func(extra map[string]string) map[string]string {
		m := map[string]string{"k": KindAgent, "id": "m-0123456789abcdef"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name string
		tags map[string]string
		want string
	}{
		{"over 512 bytes", agent(map[string]string{"api": strings.Repeat("a", 500)}), "over the limit"},
		{"unknown key", agent(map[string]string{"role": "db"}), "unknown serf tag"},
		{"no kind", map[string]string{"id": "m-0123456789abcdef"}, "kind"},
		{"unknown kind", map[string]string{"k": "router"}, "kind"},
		{"agent without id", map[string]string{"k": KindAgent}, "machine id"},
		{"bad state", agent(map[string]string{"st": "sleeping"}), "unknown state"},
		{"bad step", agent(map[string]string{"step": "Disk Wipe"}), "step"},
		{"space in version", agent(map[string]string{"v": "1 2"}), "version"},
		{"coordinator without api", map[string]string{"k": KindCoordinator}, "api"},
	}
	for _, tt := range tests {
		if _, err := ParseTags(tt.tags); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tt.name, err, tt.want)
		}
	}
}
