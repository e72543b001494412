package planner

import (
	"reflect"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

const planID = "m-00112233aabbccdd"

func TestPlanSteps(t *testing.T) {
	boot := shared.DiskTarget{Serial: "SSD-BOOT", WWN: "0x5000C500A1B2C3D4", Name: "sda"}
	ramSteps := []shared.Step{
		{Name: "disk", Kind: shared.StepDisk, Phase: shared.PhaseRAM, Disk: &shared.DiskStep{Target: boot, GPT: true}},
		{Name: "image", Kind: shared.StepImage, Phase: shared.PhaseRAM, Image: &shared.ImageStep{Target: boot,
			Image: shared.ImageSpec{URL: "/v1/images/debian-12.raw.zst", SHA256: strings.Repeat("a", 64)}}},
		{Name: "handoff", Kind: shared.StepHandoff, Phase: shared.PhaseRAM, Handoff: &shared.HandoffStep{Target: boot, RootLabel: "rivet-root", Hostname: planID}},
		{Name: "bootcfg", Kind: shared.StepBootCfg, Phase: shared.PhaseRAM, BootCfg: &shared.BootCfgStep{Boot: shared.BootDisk}},
		{Name: "reboot", Kind: shared.StepReboot, Phase: shared.PhaseRAM, Reboot: &shared.RebootStep{}},
	}
	swarmStep := func(r string) shared.Step {
		return shared.Step{Name: "swarm", Kind: shared.StepSwarm, Phase: shared.PhaseDisk, Swarm: &shared.SwarmStep{Role: r}}
	}
	tests := []struct {
		name      string
		roleSwarm string
		placed    string
		want      []shared.Step
		wantErr   string
	}{
		{name: "auto placed manager", roleSwarm: shared.SwarmAuto, placed: shared.SwarmManager,
			want: append(append([]shared.Step{}, ramSteps...), swarmStep(shared.SwarmManager))},
		{name: "auto placed worker", roleSwarm: shared.SwarmAuto, placed: shared.SwarmWorker,
			want: append(append([]shared.Step{}, ramSteps...), swarmStep(shared.SwarmWorker))},
		{name: "fixed worker needs no placement", roleSwarm: shared.SwarmWorker,
			want: append(append([]shared.Step{}, ramSteps...), swarmStep(shared.SwarmWorker))},
		{name: "fixed manager", roleSwarm: shared.SwarmManager, placed: shared.SwarmManager,
			want: append(append([]shared.Step{}, ramSteps...), swarmStep(shared.SwarmManager))},
		{name: "none has no swarm step", roleSwarm: shared.SwarmNone, want: ramSteps},
		{name: "auto without placement", roleSwarm: shared.SwarmAuto, wantErr: "run PlaceManagers first"},
		{name: "fixed role contradicted", roleSwarm: shared.SwarmWorker, placed: shared.SwarmManager,
			wantErr: "role web is a swarm worker, but placement says manager"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := role("web", shared.Selector{})
			r.Swarm.Role = tt.roleSwarm
			p, err := Plan(server(planID, nil), &r, 7, tt.placed)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Plan error = %v; want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			if p.MachineID != planID || p.Role != "web" || p.Generation != 7 {
				t.Fatalf("plan header = %s/%s/%d", p.MachineID, p.Role, p.Generation)
			}
			if !reflect.DeepEqual(p.Steps, tt.want) {
				t.Fatalf("steps:\n got %+v\nwant %+v", p.Steps, tt.want)
			}
		})
	}
}

// TestHostnameFromLabelOrID: an operator's valid hostname label names the installed
// host; anything else falls back to the machine id.
func TestHostnameFromLabelOrID(t *testing.T) {
	for label, want := range map[string]string{"": planID, "web-01": "web-01", "Web_01": planID,
		strings.Repeat("a", 64): planID, "-x": planID} {
		m := server(planID, nil)
		if label != "" {
			m.Labels = map[string]string{HostnameLabel: label}
		}
		if got := Hostname(m); got != want {
			t.Errorf("hostname label %q: got %q, want %q", label, got, want)
		}
	}
}

func TestPlanRefusesUnidentifiableDisk(t *testing.T) {
	r := role("lab", shared.Selector{})
	r.InstallDisk = shared.DiskRule{Smallest: &shared.SmallestDisk{Type: "virtio"}}
	m := server(planID, nil)
	m.Inventory.Disks = []shared.Disk{{Name: "vda", Type: "virtio", SizeBytes: 20 * diskGB}}
	if _, err := Plan(m, &r, 1, shared.SwarmWorker); err == nil || !strings.Contains(err.Error(), "neither serial nor WWN") {
		t.Fatalf("Plan error = %v; want a refusal to plan a disk without serial or WWN", err)
	}
}

func TestPlanRefusesInvalidRole(t *testing.T) {
	r := role("Bad Name", shared.Selector{})
	if _, err := Plan(server(planID, nil), &r, 1, shared.SwarmWorker); err == nil {
		t.Fatal("Plan accepted a role with an invalid name")
	}
}
