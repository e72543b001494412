package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dockerswarm "github.com/docker/docker/api/types/swarm"
	dockerclient "github.com/docker/docker/client"
	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/coordinator/lab"
	"github.com/rivetmetal/rivet/internal/netclaim"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// The lab tests use 10.232.81.0/24 (the operator's `make lab` has 10.232.80.0/24) and a
// random lab name, so they run beside a real lab.
const labTestSubnet = "10.232.81"

// requireLabHost checks what the lab needs on the host.
func requireLabHost(t *testing.T) {
	t.Helper()
	testenvLong(t)
	testenv.RequireRoot(t)
	for _, c := range []string{"ip", "qemu-system-x86_64", "zstd"} {
		testenv.RequireCommand(t, c)
	}
	for _, f := range []string{"/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/snponly.efi", "/usr/share/OVMF/OVMF_CODE_4M.fd"} {
		testenv.RequireFile(t, f)
	}
}

// requireLab checks what the lab needs, and returns the lab image.
func requireLab(t *testing.T) string {
	t.Helper()
	requireLabHost(t)
	testenv.RequireCommand(t, "debootstrap")
	// make lab-image is cached: it rebuilds only what changed (the first build runs
	// debootstrap, a few minutes), so every test sees the image of this tree.
	build := exec.Command("make", "lab-image")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make lab-image: %v\n%s", err, out)
	}
	return filepath.Join(repoRoot(), "build", "labimage", "rivet-lab.raw.zst")
}

// newLabConfig returns a lab with a unique name under the test's temp dir, removed
// (and checked to leave nothing) at the end of the test whatever happens.
func newLabConfig(t *testing.T, machines int, image string) lab.Config {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	bins := binDir
	if d := os.Getenv("RIVET_LAB_TEST_BIN_DIR"); d != "" {
		bins = d // prebuilt rivet, rivet-agent and rivet-mkinitramfs (e.g. make build's bin/)
	}
	cfg := lab.Config{Name: "rvt" + hex.EncodeToString(b), Subnet: labTestSubnet, Dir: filepath.Join(t.TempDir(), "lab"),
		BinDir: bins, Machines: machines, Image: image, KernelCache: filepath.Join(repoRoot(), "build", "kernel"),
		Out: testWriter{t}}
	// A test killed before its cleanup leaves the lab's namespace, which holds the subnet:
	// the claim lets the next run's sweep remove it (lab.Up refuses a held subnet).
	claim, swept, err := netclaim.New(cfg.Name)
	for _, line := range swept {
		t.Logf("netclaim: %s", line)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.Claim = claim
	// The lab's processes run in sessions of their own and outlive the process that
	// started them; as their subreaper this test collects them when they end instead of
	// leaving zombies to an init that may not.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			logLabFailure(t, cfg)
		}
		if err := lab.Down(ctx, cfg); err != nil {
			t.Errorf("lab down: %v", err)
		}
		if err := claim.Release(); err != nil {
			t.Errorf("releasing the lab's network claim: %v", err)
		}
		reapZombies()
	})
	return cfg
}

// TestLabUpDown is the lab's proof (issues 6 and 15), on the metal path: three blank VMs
// (BIOS and UEFI), each behind a BMC (ipmi_sim; vm2 Rivet's Redfish BMC), are imported
// from the lab's import file (host names, 3 racks, BMCs) and powered on through the
// coordinator's API and their BMCs; they PXE-boot, install the lab image, reboot from
// disk and form a Swarm with one manager per rack. vm3's cable is out at power-on: its
// first network boot fails, and the coordinator's recovery (a power cycle with PXE once)
// brings it to ready with no hand work. Then, on the ready lab: Rivet's power status,
// off, on and cycle agree with ipmitool and sushy; a wrong password and an unreachable
// BMC fail clearly and change nothing; no BMC password is in clear anywhere; vm1 is
// re-imaged through kexec, without its BMC, and vm2 through a BMC cycle (issue 16). `rivet lab up` a second time
// reuses everything; `rivet lab down` leaves nothing.
func TestLabUpDown(t *testing.T) {
	image := requireLab(t)
	testenv.RequireCommand(t, "ipmi_sim")
	testenv.RequireCommand(t, "ipmitool")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	cfg := newLabConfig(t, 3, image)
	cfg.Firmware = "mixed" // vm1 and vm3 BIOS, vm2 UEFI
	cfg.Unplugged = []int{3}

	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rows := readLabImport(t, cfg)
	checkPoweredOnByBMCs(t, ctx, rows)
	pxeBlockedOnce(t, ctx, l, 3)
	progress, err := l.Follow(ctx, true)
	var report bytes.Buffer
	lab.Report(&report, progress, l.Started)
	lab.Swarm(ctx, &report, progress)
	t.Logf("lab:\n%s", report.String())
	if err != nil {
		t.Fatal(err)
	}
	printLabFigures(progress, time.Since(l.Started))
	checkSwarm(t, ctx, l.Client, progress)
	checkRecovered(t, ctx, l.Client, progress[2])
	checkRacksAndNames(t, ctx, l, rows, progress)

	// Idempotent: a second `rivet lab up` reuses the namespace, coordinator, BMCs and VMs.
	pids := labPIDs(l)
	out := runLabCLI(t, ctx, cfg, "up", "--machines", "3", "--image", image, "--timeout", "5m")
	if !strings.Contains(out, "coordinator     reusing") || !strings.Contains(out, "running already") {
		t.Fatalf("second lab up did not reuse the lab:\n%s", out)
	}
	if again := labPIDs(l); fmt.Sprint(again) != fmt.Sprint(pids) {
		t.Fatalf("second lab up changed the lab's processes: %v → %v", pids, again)
	}

	checkPowerThroughBMCs(t, ctx, l, rows, progress)
	vm1, err := l.Client.Machine(ctx, progress[0].Machine.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkBadBMCs(t, ctx, l, rows, vm1)
	checkNoBMCPassword(t, ctx, l)
	checkReimage(t, ctx, l, progress, 1, shared.ViaKexec)
	checkReimage(t, ctx, l, progress, 2, shared.ViaBMC)

	out = runLabCLI(t, ctx, cfg, "down")
	if left := cfg.Leftovers(ctx); len(left) > 0 {
		t.Fatalf("lab down left %v:\n%s", left, out)
	}
	for _, pid := range pids {
		if processRuns(pid) {
			t.Fatalf("process %d of the lab survived lab down", pid)
		}
	}
}

// TestLabBootsAndLeavesNothing runs the lab without an OS image (no role: machines
// register and wait): a BIOS and a UEFI VM PXE-boot from the lab coordinator's full DHCP,
// TFTP and HTTP and register with their MACs, and `rivet lab down` then leaves nothing.
func TestLabBootsAndLeavesNothing(t *testing.T) {
	requireLabHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cfg := newLabConfig(t, 2, "")
	cfg.Firmware = "mixed"
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	progress, err := l.Follow(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range progress {
		phases, _ := p.Phases()
		if p.Machine == nil || p.Machine.State != shared.StateDiscovered || len(phases) == 0 {
			t.Fatalf("%s: machine %+v; want it registered", p.VM.Name(), p.Machine)
		}
		fmt.Printf("rivet-figure: lab firmware=%s power_on_to_registered_s=%.1f\n", p.VM.Power.Config().Firmware, phases[0].Took.Seconds())
	}
	pids := labPIDs(l)
	out := runLabCLI(t, ctx, cfg, "down")
	if left := cfg.Leftovers(ctx); len(left) > 0 {
		t.Fatalf("lab down left %v:\n%s", left, out)
	}
	for _, pid := range pids {
		if pid == 0 || processRuns(pid) {
			t.Fatalf("lab process %d: missing before down, or survived it (all: %v)", pid, pids)
		}
	}
}

// TestLabPowerCutDuringImage kills a VM in the middle of its image write, powers it on,
// and checks it still ends ready: the image step is re-run and verified (sha256 while
// writing), the installed OS checks in from disk.
func TestLabPowerCutDuringImage(t *testing.T) {
	image := requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	cfg := newLabConfig(t, 1, image)
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	vm := l.Machines[0]
	var id shared.MachineID
	testenv.Eventually(t, 15*time.Minute, "the image write at 20%", func() error {
		ms, err := l.Client.Machines(ctx)
		if err != nil || len(ms) == 0 {
			return fmt.Errorf("no machine yet (%v)", err)
		}
		id = ms[0].ID
		if ms[0].Step != "image" || ms[0].Progress.Percent() < 20 {
			return fmt.Errorf("step %s at %.0f%%", ms[0].Step, ms[0].Progress.Percent())
		}
		return nil
	})
	if err := vm.Power.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	vm.PoweredOn = time.Time{}
	if err := vm.Power.On(ctx); err != nil {
		t.Fatal(err)
	}
	progress, err := l.Follow(ctx, true)
	var report bytes.Buffer
	lab.Report(&report, progress, l.Started)
	t.Logf("lab:\n%s", report.String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("rivet-figure: lab power_cut_during_image_to_ready_s=%.1f\n", time.Since(cutAt).Seconds())
	m, err := l.Client.Machine(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if m.State != shared.StateReady || m.Agent.Mode != shared.ModeService {
		t.Fatalf("after a power cut during the image write: state %s, agent %s; want ready, service", m.State, m.Agent.Mode)
	}
	for _, st := range m.Steps {
		if st.Name == "image" && st.Status != shared.StepSucceeded {
			t.Fatalf("image step %s after the power cut, want succeeded", st.Status)
		}
	}
}

// checkSwarm asserts every machine is ready with its own swarm node id and that the
// planner's managers are there (3 machines with an auto role: 3 managers).
func checkSwarm(t *testing.T, ctx context.Context, client *shared.Client, progress []*lab.Progress) {
	t.Helper()
	nodes := map[string]bool{}
	managers := 0
	var machines []*shared.Machine
	for _, p := range progress {
		m, err := client.Machine(ctx, p.Machine.ID)
		if err != nil {
			t.Fatal(err)
		}
		machines = append(machines, m)
		if m.State != shared.StateReady || m.SwarmNodeID == "" || nodes[m.SwarmNodeID] {
			t.Fatalf("machine %s: state %s, swarm node %q (seen: %v); want ready with its own node", m.ID, m.State, m.SwarmNodeID, nodes)
		}
		nodes[m.SwarmNodeID] = true
		for _, s := range m.Plan.Steps {
			if s.Swarm != nil && s.Swarm.Role == shared.SwarmManager {
				managers++
			}
		}
	}
	if managers < 1 {
		t.Fatalf("no swarm manager among %d machines", len(progress))
	}
	checkSwarmHostnames(t, ctx, machines)
}

// checkSwarmHostnames asks a manager's dockerd (the lab image's also listens on tcp
// 2375) for the swarm's nodes: each machine's node must carry the host name its plan's
// handoff gave it, not the image's.
func checkSwarmHostnames(t *testing.T, ctx context.Context, machines []*shared.Machine) {
	t.Helper()
	var manager string
	for _, m := range machines {
		for _, s := range m.Plan.Steps {
			if s.Swarm != nil && s.Swarm.Role == shared.SwarmManager {
				manager, _, _ = strings.Cut(m.Addr, ":")
			}
		}
	}
	c, err := dockerclient.NewClientWithOpts(dockerclient.WithHost("tcp://"+manager+":2375"), dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nodes, err := c.NodeList(ctx, dockerswarm.NodeListOptions{})
	if err != nil {
		t.Fatalf("docker node ls on manager %s: %v", manager, err)
	}
	hostnames := map[string]string{}
	for _, n := range nodes {
		hostnames[n.ID] = n.Description.Hostname
	}
	for _, m := range machines {
		var want string
		for _, s := range m.Plan.Steps {
			if s.Handoff != nil {
				want = s.Handoff.Hostname
			}
		}
		if got := hostnames[m.SwarmNodeID]; want == "" || got != want {
			t.Errorf("machine %s: swarm node %s has host name %q, want the plan's %q", m.ID, m.SwarmNodeID, got, want)
		}
	}
}

func printLabFigures(progress []*lab.Progress, total time.Duration) {
	for _, p := range progress {
		phases, sum := p.Phases()
		var b strings.Builder
		fmt.Fprintf(&b, "rivet-figure: lab vm=vm%d firmware=%s", p.VM.Index, p.VM.Power.Config().Firmware)
		for _, ph := range phases {
			fmt.Fprintf(&b, " %s_s=%.1f", ph.Name, ph.Took.Seconds())
		}
		fmt.Printf("%s total_s=%.1f\n", b.String(), sum.Seconds())
	}
	fmt.Printf("rivet-figure: lab machines=%d up_to_all_ready_s=%.1f\n", len(progress), total.Seconds())
}

// labPIDs are the coordinator's, the router advertiser's and the VMs' processes.
func labPIDs(l *lab.Lab) []int {
	var pids []int
	names := []string{"coordinator", "router-adverts"}
	for _, vm := range l.Machines {
		names = append(names, fmt.Sprintf("bmc-vm%d", vm.Index))
	}
	for _, name := range names {
		data, _ := os.ReadFile(filepath.Join(l.Config.Dir, name+".pid"))
		var pid int
		fmt.Sscanf(string(data), "%d", &pid)
		pids = append(pids, pid)
	}
	for _, vm := range l.Machines {
		pids = append(pids, vm.Power.PID())
	}
	return pids
}

// runLabCLI runs `rivet lab VERB` against the test's lab.
func runLabCLI(t *testing.T, ctx context.Context, cfg lab.Config, verb string, args ...string) string {
	t.Helper()
	full := append([]string{"lab", verb, "--dir", cfg.Dir}, args...)
	if verb == "up" {
		full = append(full, "--name", cfg.Name, "--subnet", cfg.Subnet, "--kernel-cache", cfg.KernelCache)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(cfg.BinDir, "rivet"), full...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rivet %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

func processRuns(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}

// reapZombies collects the exited lab processes this test became the parent of.
func reapZombies() {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z' {
			continue
		}
		var pid, ppid int
		var state string
		fmt.Sscanf(string(stat[i+2:]), "%s %d", &state, &ppid)
		fmt.Sscanf(e.Name(), "%d", &pid)
		if ppid == os.Getpid() {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// logLabFailure logs the end of the coordinator's log and of each VM's console.
func logLabFailure(t *testing.T, cfg lab.Config) {
	for _, f := range []string{"coordinator.log", "router-adverts.log"} {
		data, _ := os.ReadFile(filepath.Join(cfg.Dir, f))
		t.Logf("%s:\n%s", f, tail(string(data), 4000))
	}
	consoles, _ := filepath.Glob(filepath.Join(cfg.Dir, "vms", "*", "serial.log"))
	for _, c := range consoles {
		data, _ := os.ReadFile(c)
		t.Logf("%s:\n%s", c, tail(string(data), 3000))
	}
}

// testWriter sends the lab's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
