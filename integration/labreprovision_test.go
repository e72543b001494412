package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	dockerswarm "github.com/docker/docker/api/types/swarm"
	dockerclient "github.com/docker/docker/client"

	"github.com/rivetmetal/rivet/coordinator/lab"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// checkReimage is issue 16's re-image of one installed VM, a manager of the lab's three,
// re-provisioned with --allow-fewer-managers (the lab has no worker to stand in). Rivet
// drains and removes its node, rotates the join tokens and plans it again with an image
// to write; then, via kexec, its installed agent fetches the RAM agent's kernel and
// initramfs (digests from the API) and kexecs into them, and no power command goes to its
// BMC; via bmc, the leader power-cycles it with PXE once through its BMC. Either way the
// RAM agent registers with a fresh ticket, writes the image, reboots to disk, and the new
// OS joins the swarm as a manager again.
func checkReimage(t *testing.T, ctx context.Context, l *lab.Lab, progress []*lab.Progress, vm int, via shared.ReprovisionVia) {
	t.Helper()
	target := progress[vm-1].Machine.ID
	before, err := l.Client.Machine(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if _, err := l.Client.Reprovision(ctx, target, &shared.ReprovisionRequest{Reason: "lab: re-image via " + string(via),
		AllowFewerManagers: true, Via: via}); err != nil {
		t.Fatal(err)
	}
	// When each phase and state was first seen, for the figures.
	var seen []string
	at := map[string]time.Duration{}
	note := func(name string) {
		if _, ok := at[name]; !ok {
			at[name] = time.Since(began)
			seen = append(seen, name)
		}
	}
	testenv.Eventually(t, 20*time.Minute, fmt.Sprintf("vm%d re-imaged via %s and ready", vm, via), func() error {
		m, err := l.Client.Machine(ctx, target)
		if err != nil {
			return err
		}
		if m.Reprovision != nil { // the phases and states it went through (ready is the total)
			note(string(m.Reprovision.Phase))
			if m.State != shared.StateReady {
				note(string(m.State))
			}
		}
		switch {
		case m.State == shared.StateFailed:
			t.Fatalf("vm%d failed while re-imaged: %+v", vm, m.LastError)
		case m.Reprovision != nil || m.State != shared.StateReady:
			return fmt.Errorf("%s, re-provisioning %v", m.State, m.Reprovision != nil)
		}
		return nil
	})
	took := time.Since(began)
	var b strings.Builder
	for _, name := range seen {
		fmt.Fprintf(&b, " %s_at_s=%.1f", name, at[name].Seconds())
	}
	fmt.Printf("rivet-figure: lab reimage via=%s vm=vm%d total_s=%.1f%s\n", via, vm, took.Seconds(), b.String())

	after, err := l.Client.Machine(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if after.SwarmNodeID == "" || after.SwarmNodeID == before.SwarmNodeID {
		t.Fatalf("after the re-image vm%d's swarm node is %q (was %q): want a new node", vm, after.SwarmNodeID, before.SwarmNodeID)
	}
	// The BMC's side, from the timeline: a kexec re-image sends no power command (setting
	// the next boot device to the disk, the bootcfg step's, is none); a BMC re-image sends
	// one cycle with PXE once, by the re-provisioning, and no other.
	evs, err := l.Client.Events(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	var cycles, others []string
	for _, e := range evs {
		if e.Kind != shared.EventPower || !e.Time.After(began) || strings.HasPrefix(e.Message, "power boot-disk") {
			continue
		}
		if strings.HasPrefix(e.Message, "power cycle (PXE once) by re-provisioning") && !strings.Contains(e.Message, "failed") {
			cycles = append(cycles, e.Message)
		} else {
			others = append(others, e.Message)
		}
	}
	want := 0
	if via == shared.ViaBMC {
		want = 1
	}
	if len(cycles) != want || len(others) > 0 {
		t.Fatalf("vm%d re-imaged via %s: power commands %q and %q; want %d cycle(s) with PXE once by the re-provisioning and nothing else",
			vm, via, cycles, others, want)
	}
	timeline := strings.Join(timelineOf(ctx, t, l.Client, target, shared.EventRegistered, shared.EventStep, shared.EventAction), "\n")
	for _, want := range []string{"re-provisioning started", "registered again (ram mode)", "step image succeeded", "re-provisioned in "} {
		if !strings.Contains(timeline, want) {
			t.Fatalf("vm%d's timeline lacks %q:\n%s", vm, want, timeline)
		}
	}
	if _, ok := at[string(shared.StateProvisioning)]; !ok {
		t.Fatalf("vm%d was never seen provisioning (its RAM agent's steps): seen %v", vm, seen)
	}
	checkLabSwarmWhole(t, ctx, l, progress, vm, before.SwarmNodeID)
}

// checkLabSwarmWhole asks a manager other than vm for the swarm: every lab machine a
// Ready node, three reachable managers, and gone is not listed.
func checkLabSwarmWhole(t *testing.T, ctx context.Context, l *lab.Lab, progress []*lab.Progress, vm int, gone string) {
	t.Helper()
	m, err := l.Client.Machine(ctx, progress[vm%len(progress)].Machine.ID)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := strings.Cut(m.Addr, ":")
	c, err := dockerclient.NewClientWithOpts(dockerclient.WithHost("tcp://"+host+":2375"), dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testenv.Eventually(t, 2*time.Minute, "the lab's swarm whole again", func() error {
		nodes, err := c.NodeList(ctx, dockerswarm.NodeListOptions{})
		if err != nil {
			return err
		}
		var ids []string
		managers := 0
		for _, n := range nodes {
			ids = append(ids, n.ID)
			if n.Status.State != dockerswarm.NodeStateReady {
				return fmt.Errorf("node %s (%s) is %s", n.ID, n.Description.Hostname, n.Status.State)
			}
			if n.ManagerStatus != nil && n.ManagerStatus.Reachability == dockerswarm.ReachabilityReachable {
				managers++
			}
		}
		if len(nodes) != len(progress) || managers != 3 || slices.Contains(ids, gone) {
			return fmt.Errorf("%d nodes (want %d), %d reachable managers (want 3), the old node listed %v",
				len(nodes), len(progress), managers, slices.Contains(ids, gone))
		}
		return nil
	})
}
