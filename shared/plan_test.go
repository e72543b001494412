package shared

import (
	"strings"
	"testing"
)

func TestStepValidate(t *testing.T) {
	target := DiskTarget{Serial: "S1"}
	handoff := func(label string) Step {
		return Step{Name: "handoff", Kind: StepHandoff, Phase: PhaseRAM, Handoff: &HandoffStep{Target: target, RootLabel: label}}
	}
	tests := []struct {
		name    string
		step    Step
		wantErr string
	}{
		{"handoff", handoff("rivet-root"), ""},
		{"handoff label too long", handoff(strings.Repeat("r", 17)), "payload does not match"},
		{"handoff label with a slash", handoff("../etc"), "payload does not match"},
		{"handoff without label", handoff(""), "payload does not match"},
		{"handoff without target", Step{Name: "handoff", Kind: StepHandoff, Phase: PhaseRAM, Handoff: &HandoffStep{RootLabel: "r"}}, "payload does not match"},
		{"two payloads", Step{Name: "x", Kind: StepHandoff, Phase: PhaseRAM, Handoff: &HandoffStep{Target: target, RootLabel: "r"},
			Reboot: &RebootStep{}}, "payload does not match"},
		{"unknown kind", Step{Name: "x", Kind: "format-c", Phase: PhaseRAM, Reboot: &RebootStep{}}, "unknown kind"},
		{"bad phase", Step{Name: "x", Kind: StepReboot, Phase: "later", Reboot: &RebootStep{}}, "phase"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.step.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate() = %v; want %q", err, tt.wantErr)
			}
		})
	}
}

func TestImageRootLabel(t *testing.T) {
	img := ImageSpec{URL: "/v1/images/os.raw.zst", SHA256: strings.Repeat("a", 64)}
	if img.Root() != DefaultRootLabel || img.Validate() != nil {
		t.Fatalf("default root label %q, validate %v", img.Root(), img.Validate())
	}
	img.RootLabel = "bad label"
	if err := img.Validate(); err == nil || !strings.Contains(err.Error(), "root_label") {
		t.Fatalf("Validate() = %v; want a root_label error", err)
	}
}
