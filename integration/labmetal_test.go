package integration

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/lab"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// The lab on the metal path (issue 15): every VM behind a BMC (ipmi_sim, vm2 behind
// Rivet's Redfish BMC), imported from the lab's own import file and powered through the
// coordinator's API. These checks run inside TestLabUpDown's lab: one lab, many checks.

// labBMC is one row of the lab's import file, read back as an operator would.
type labBMC struct {
	Host, MAC, Rack, Driver, Address, User, PasswordFile, Pin string
}

// readLabImport reads the import file `lab up` wrote and imported, by host name.
func readLabImport(t *testing.T, cfg lab.Config) map[string]labBMC {
	t.Helper()
	data, err := os.ReadFile(cfg.ImportFile())
	if err != nil {
		t.Fatalf("the lab's import file: %v", err)
	}
	records, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil || len(records) < 2 {
		t.Fatalf("the lab's import file %s: %v (%d records)", cfg.ImportFile(), err, len(records))
	}
	col := map[string]int{}
	for i, name := range records[0] {
		col[name] = i
	}
	rows := map[string]labBMC{}
	for _, r := range records[1:] {
		b := labBMC{Host: r[col["hostname"]], MAC: r[col["mac"]], Rack: r[col["label.rack"]], Driver: r[col["bmc_driver"]],
			Address: r[col["bmc_address"]], User: r[col["bmc_user"]], PasswordFile: r[col["bmc_password_file"]], Pin: r[col["bmc_tls_sha256"]]}
		rows[b.Host] = b
	}
	return rows
}

// independentPower asks the BMC with a client that is not Rivet's: Debian's ipmitool
// for IPMI, OpenStack's sushy for Redfish. It returns "on" or "off".
func independentPower(t *testing.T, ctx context.Context, b labBMC) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if b.Driver == string(shared.BMCRedfish) {
		pw, err := os.ReadFile(b.PasswordFile)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, "/usr/bin/python3", filepath.Join(repoRoot(), "coordinator", "power", "testdata", "sushy_bmc.py"),
			b.Address, b.User, "state")
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "REQUESTS_CA_BUNDLE=") || strings.HasPrefix(kv, "CURL_CA_BUNDLE=")
		})
		cmd.Env = append(cmd.Env, "RIVET_BMC_PASSWORD="+strings.TrimSpace(string(pw)))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("sushy against %s: %v\n%s", b.Address, err, stderr.String())
		}
		var v struct {
			PowerState string `json:"power_state"`
		}
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("sushy printed %q: %v", out, err)
		}
		return strings.ToLower(v.PowerState)
	}
	host, port, err := net.SplitHostPort(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "ipmitool", "-I", "lanplus", "-C", "3", "-H", host, "-p", port, "-U", b.User,
		"-f", b.PasswordFile, "-R", "3", "-N", "2", "chassis", "power", "status").CombinedOutput()
	if err != nil {
		t.Fatalf("ipmitool against %s: %v: %s", b.Address, err, out)
	}
	switch strings.TrimSpace(string(out)) {
	case "Chassis Power is on":
		return "on"
	case "Chassis Power is off":
		return "off"
	}
	t.Fatalf("ipmitool chassis power status: unexpected answer %q", out)
	return ""
}

// powerThroughRivet sends one power command through the coordinator's API and checks
// that Rivet's answer and the independent client's agree on want.
func powerThroughRivet(t *testing.T, ctx context.Context, client *shared.Client, b labBMC, req shared.PowerRequest, want string) {
	t.Helper()
	action := req.Action
	if req.PXEOnce {
		action += " --pxe-once"
	}
	out, err := client.Power(ctx, b.Host, &req)
	if err != nil {
		t.Fatalf("rivet machines power %s %s: %v", b.Host, action, err)
	}
	if !out.OK {
		t.Fatalf("rivet machines power %s %s: error %q", b.Host, action, out.Error)
	}
	if req.Action == shared.PowerCycle {
		// ipmi_sim cycles as many BMCs do: off at once, on a moment later, so the state
		// read back right after the command may be either. Both clients must come to on.
		testenv.Eventually(t, time.Minute, b.Host+" on again after its cycle, to Rivet and the independent client", func() error {
			st, err := client.Power(ctx, b.Host, &shared.PowerRequest{Action: shared.PowerStatus})
			if err != nil {
				return err
			}
			if got := independentPower(t, ctx, b); st.State != want || got != want {
				return fmt.Errorf("Rivet says %q, the independent client %q", st.State, got)
			}
			return nil
		})
	} else if out.State != want {
		t.Fatalf("rivet machines power %s %s: state %q; want %s", b.Host, action, out.State, want)
	} else if got := independentPower(t, ctx, b); got != want {
		t.Fatalf("after rivet's %s of %s (%s), the independent client says %q, Rivet %q", action, b.Host, b.Driver, got, want)
	}
	t.Logf("power %s %s via %s: Rivet and the independent client both say %s (%d ms)", action, b.Host, b.Driver, want, out.DurationMS)
}

// checkPoweredOnByBMCs: right after `lab up` powered every VM on (PXE once) through
// the coordinator, each BMC says on to the independent client.
func checkPoweredOnByBMCs(t *testing.T, ctx context.Context, rows map[string]labBMC) {
	t.Helper()
	for host, b := range rows {
		if got := independentPower(t, ctx, b); got != "on" {
			t.Fatalf("%s after lab up's power-on through its %s BMC: the independent client says %s", host, b.Driver, got)
		}
	}
}

// checkPowerThroughBMCs is issue 15's first proof in the lab: on a ready IPMI VM and the
// Redfish VM, Rivet's status, off, on and cycle agree with ipmitool and sushy; each VM
// comes back from its disk into the Swarm.
func checkPowerThroughBMCs(t *testing.T, ctx context.Context, l *lab.Lab, rows map[string]labBMC, progress []*lab.Progress) {
	for _, p := range progress {
		b := rows[p.VM.Name()]
		if p.VM.Index != 1 && b.Driver != string(shared.BMCRedfish) {
			continue
		}
		before := p.Machine
		powerThroughRivet(t, ctx, l.Client, b, shared.PowerRequest{Action: shared.PowerStatus}, "on")
		powerThroughRivet(t, ctx, l.Client, b, shared.PowerRequest{Action: shared.PowerOff}, "off")
		if pid := p.VM.Power.PID(); pid != 0 {
			t.Fatalf("%s: its qemu (pid %d) still runs after its BMC reported power off", b.Host, pid)
		}
		powerThroughRivet(t, ctx, l.Client, b, shared.PowerRequest{Action: shared.PowerStatus}, "off")
		onAt := time.Now()
		powerThroughRivet(t, ctx, l.Client, b, shared.PowerRequest{Action: shared.PowerOn}, "on")
		// PXE once on an installed machine: the boot services send it to its disk.
		powerThroughRivet(t, ctx, l.Client, b, shared.PowerRequest{Action: shared.PowerCycle, PXEOnce: true}, "on")
		waitBackFromDisk(t, ctx, l.Client, before, onAt)
	}
}

// waitBackFromDisk waits until machine before checks in from its disk after at (the
// service-mode agent, the same machine id and swarm node) and is ready again.
func waitBackFromDisk(t *testing.T, ctx context.Context, client *shared.Client, before *shared.Machine, at time.Time) {
	t.Helper()
	var m *shared.Machine
	testenv.Eventually(t, 15*time.Minute, string(before.ID)+" back from its disk and ready", func() (err error) {
		if m, err = client.Machine(ctx, before.ID); err != nil {
			return err
		}
		if m.Agent.Mode == shared.ModeRAM && m.Agent.LastSeen.After(at) {
			t.Fatalf("%s: the RAM agent checked in after the power-on: it network-booted the agent, not its disk", before.ID)
		}
		if !m.Agent.LastSeen.After(at) || m.State != shared.StateReady {
			return fmt.Errorf("state %s, last check-in %s", m.State, m.Agent.LastSeen.Format(time.RFC3339))
		}
		return nil
	})
	fmt.Printf("rivet-figure: lab bmc_power_on_to_ready_from_disk_s=%.1f machine=%s\n", time.Since(at).Seconds(), before.ID)
	if m.SwarmNodeID != before.SwarmNodeID || m.Agent.Mode != shared.ModeService {
		t.Fatalf("%s after its power cycle: swarm node %q (was %q), agent %s; want the same node, service mode",
			before.ID, m.SwarmNodeID, before.SwarmNodeID, m.Agent.Mode)
	}
}

// checkBadBMCs points vm1's row at a wrong password, then at an address where no BMC
// answers: each power command fails with an error naming the BMC, lands on vm1's
// timeline, and changes nothing (ipmitool still sees it on). The right row goes back.
func checkBadBMCs(t *testing.T, ctx context.Context, l *lab.Lab, rows map[string]labBMC, vm1 *shared.Machine) {
	b := rows[vm1.Hostname]
	wrong := filepath.Join(t.TempDir(), "wrong-password")
	if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A BMC that does not answer, as a dead or misaddressed one on a BMC network: a UDP
	// socket on the host's lab address that reads nothing (a closed port would answer
	// with an ICMP error at once).
	silent, err := net.ListenPacket("udp", l.Config.Subnet+".254:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cases := []struct{ name, address, passwordFile, want string }{
		{"wrong password", b.Address, wrong, "password"},
		{"unreachable BMC", silent.LocalAddr().String(), b.PasswordFile, "attempts"},
	}
	for _, c := range cases {
		importRow(t, ctx, l, b, c.address, c.passwordFile)
		out, err := l.Client.Power(ctx, b.Host, &shared.PowerRequest{Action: shared.PowerOff})
		msg := ""
		if err != nil {
			msg = err.Error()
		} else if !out.OK {
			msg = out.Error
		}
		if msg == "" || !strings.Contains(msg, c.address) || !strings.Contains(msg, c.want) {
			t.Fatalf("%s: power off answered %+v, %v; want an error naming BMC %s and %q", c.name, out, err, c.address, c.want)
		}
		t.Logf("%s: %s", c.name, msg)
		if got := independentPower(t, ctx, b); got != "on" {
			t.Fatalf("%s: the failed power off changed the machine: ipmitool says %s", c.name, got)
		}
		events, err := l.Client.Events(ctx, vm1.ID)
		if err != nil {
			t.Fatal(err)
		}
		if last := events[len(events)-1]; last.Kind != shared.EventPower || !strings.Contains(last.Message, "failed") ||
			!strings.Contains(last.Message, c.address) {
			t.Fatalf("%s: the machine's last event is %s %q; want the failed power command naming the BMC", c.name, last.Kind, last.Message)
		}
	}
	importRow(t, ctx, l, b, b.Address, b.PasswordFile)
	powerThroughRivet(t, ctx, l.Client, b, shared.PowerRequest{Action: shared.PowerStatus}, "on")
}

// importRow imports b's row again with another BMC address and password file, through
// the CLI as an operator would (`rivet machines import -f`).
func importRow(t *testing.T, ctx context.Context, l *lab.Lab, b labBMC, address, passwordFile string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "row.csv")
	body := "hostname,mac,label.rack,bmc_driver,bmc_address,bmc_user,bmc_password_file\n" +
		strings.Join([]string{b.Host, b.MAC, b.Rack, b.Driver, address, b.User, passwordFile}, ",") + "\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(l.Config.BinDir, "rivet"), "machines", "import", "-f", file,
		"--env-file", l.Config.OperatorEnv())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rivet machines import -f %s: %v\n%s", file, err, out)
	}
}

// checkNoBMCPassword greps everything the lab wrote (logs, consoles, the coordinator's
// data, Raft log and snapshots included) and what the API and the pages answer for the
// lab's BMC password. The guard: the same search finds it in the password file and in
// ipmi_sim's own configuration (the BMC's store), so a search that could not see it
// fails instead of passing.
func checkNoBMCPassword(t *testing.T, ctx context.Context, l *lab.Lab) {
	password, err := l.Config.BMCPassword()
	if err != nil || len(password) < 12 {
		t.Fatalf("the lab's BMC password: %q, %v", password, err)
	}
	needle := []byte(password)
	var searched, found int64
	var leaks []string
	err = filepath.WalkDir(l.Config.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return err
		}
		if strings.HasSuffix(path, ".raw") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".fd") {
			return nil // disks, the image and UEFI variables: the guests', not Rivet's
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		searched += int64(len(data))
		if !bytes.Contains(data, needle) {
			return nil
		}
		found++
		rel, _ := filepath.Rel(l.Config.Dir, path)
		if rel != filepath.Join("bmc", "password") && !(strings.HasPrefix(rel, "bmc"+string(filepath.Separator)) && strings.HasSuffix(rel, "lan.conf")) {
			leaks = append(leaks, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var answers bytes.Buffer
	for _, path := range []string{"/v1/machines", "/v1/expected", "/status/", "/metrics"} {
		resp, err := l.Client.Open(ctx, path, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		_, _ = answers.ReadFrom(resp.Body)
		resp.Body.Close()
	}
	ms, err := l.Client.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		for _, path := range []string{"/v1/machines/" + string(m.ID), "/v1/machines/" + string(m.ID) + "/events", "/status/machines/" + string(m.ID)} {
			resp, err := l.Client.Open(ctx, path, nil)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			_, _ = answers.ReadFrom(resp.Body)
			resp.Body.Close()
		}
	}
	searched += int64(answers.Len())
	if bytes.Contains(answers.Bytes(), needle) {
		leaks = append(leaks, "an API answer or page")
	}
	if found < 2 || searched < 1<<20 {
		t.Fatalf("the password search found it in %d files (want the password file and ipmi_sim's lan.conf at least) "+
			"in %d bytes: the search cannot be trusted", found, searched)
	}
	if len(leaks) > 0 {
		t.Fatalf("the lab's BMC password is in clear in: %s", strings.Join(leaks, ", "))
	}
	t.Logf("BMC password searched for in %d MiB of logs, data and answers: only in its file and the BMCs' own configuration", searched>>20)
}

// pxeBlockedOnce waits until VM vm (started with its cable out) shows on its console
// that its network boot failed, checks that it has not registered, and plugs its cable
// in. The VM does not retry by itself (qemu's firmware waits forever after a failed
// boot): only a power cycle brings it up, and the test leaves that to the coordinator.
func pxeBlockedOnce(t *testing.T, ctx context.Context, l *lab.Lab, vm int) {
	t.Helper()
	console := l.Machines[vm-1].Power.SerialLog()
	testenv.Eventually(t, 6*time.Minute, fmt.Sprintf("vm%d's console to show its network boot failed", vm), func() error {
		data, _ := os.ReadFile(console)
		for _, sign := range []string{"No more network devices", "No bootable device", "Boot failed"} {
			if bytes.Contains(data, []byte(sign)) {
				return nil
			}
		}
		return fmt.Errorf("%s has %d bytes and no boot failure yet", console, len(data))
	})
	rows, err := l.Client.Expected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Hostname == l.Machines[vm-1].Name() && r.MachineID != "" {
			t.Fatalf("vm%d registered (as %s) with its cable out", vm, r.MachineID)
		}
	}
	if err := lab.Plug(ctx, l.Config, vm, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("vm%d's first network boot failed with its cable out; cable plugged in, nothing powers it on but the coordinator", vm)
}

// checkRecovered checks that the coordinator's recovery is what brought p's VM up: its
// timeline has the recovery power cycle with PXE once, sent through its BMC.
func checkRecovered(t *testing.T, ctx context.Context, client *shared.Client, p *lab.Progress) {
	t.Helper()
	events, err := client.Events(ctx, p.Machine.ID)
	if err != nil {
		t.Fatal(err)
	}
	var recovery, cycled bool
	for _, e := range events {
		if e.Kind != shared.EventPower {
			continue
		}
		recovery = recovery || strings.Contains(e.Message, "power cycle with PXE once, attempt 1")
		cycled = cycled || (recovery && strings.Contains(e.Message, "power cycle (PXE once) by coordinator"))
	}
	if !recovery || !cycled {
		var b strings.Builder
		for _, e := range events {
			fmt.Fprintf(&b, "  %s %s %s\n", e.Time.Format(time.TimeOnly), e.Kind, e.Message)
		}
		t.Fatalf("%s (%s) is ready, but its timeline shows no recovery power cycle through its BMC (recovery %v, cycle %v):\n%s",
			p.VM.Name(), p.Machine.ID, recovery, cycled, b.String())
	}
}

// checkRacksAndNames: the Swarm's managers are spread over the import's 3 racks, and
// `rivet machines ls` shows the imported host names (docker node ls is checkSwarm's).
func checkRacksAndNames(t *testing.T, ctx context.Context, l *lab.Lab, rows map[string]labBMC, progress []*lab.Progress) {
	t.Helper()
	racks := map[string]string{}
	for _, p := range progress {
		m, err := l.Client.Machine(ctx, p.Machine.ID)
		if err != nil {
			t.Fatal(err)
		}
		if m.Hostname != p.VM.Name() || m.Labels["rack"] != rows[p.VM.Name()].Rack {
			t.Fatalf("%s: host name %q, rack %q; want the import's %q, %q", m.ID, m.Hostname, m.Labels["rack"], p.VM.Name(), rows[p.VM.Name()].Rack)
		}
		for _, s := range m.Plan.Steps {
			if s.Swarm != nil && s.Swarm.Role == shared.SwarmManager {
				racks[m.Labels["rack"]] = p.VM.Name()
			}
		}
	}
	if len(racks) != 3 {
		t.Fatalf("swarm managers by rack: %v; want one in each of the import's 3 racks", racks)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(l.Config.BinDir, "rivet"), "machines", "ls", "--env-file", l.Config.OperatorEnv())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rivet machines ls: %v\n%s", err, out)
	}
	for host := range rows {
		if !strings.Contains(string(out), host) {
			t.Fatalf("rivet machines ls does not show the imported host name %s:\n%s", host, out)
		}
	}
	t.Logf("managers by rack: %v; rivet machines ls:\n%s", racks, out)
}
