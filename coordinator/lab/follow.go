package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// Milestones of one machine, in the order a blank VM passes them. The phases of the
// final table are the times between consecutive milestones.
const (
	mRegistered = "registered" // the RAM agent's first check-in: PXE boot done
	mPlanned    = "planned"
	mDisk       = "disk"      // disk step done
	mImage      = "image"     // image step done
	mInstalled  = "installed" // the installed OS's agent checked in from disk
	mReady      = "ready"     // swarm joined
)

var milestones = []string{mRegistered, mPlanned, mDisk, mImage, mInstalled, mReady}

// phaseNames name the phase that ends at each milestone.
var phaseNames = map[string]string{mRegistered: "pxe", mPlanned: "plan", mDisk: "disk", mImage: "image",
	mInstalled: "reboot", mReady: "swarm"}

// Progress is what Follow learned about one VM.
type Progress struct {
	VM      *VM
	Machine *shared.Machine // the coordinator's record; nil until registered
	Marks   map[string]time.Time
	Start   time.Time // power-on, or when Follow began for a VM that ran already
	// before holds the milestones a VM that ran already had passed when Follow began:
	// their phases were not seen, so the table shows none for them.
	before      map[string]bool
	lastPct     int
	saidPlanned bool
	lastLog     string
}

// Phase is one measured phase of one machine.
type Phase struct {
	Name string
	Took time.Duration
}

// Phases returns the measured phases in order, and the total from start to the last mark.
func (p *Progress) Phases() ([]Phase, time.Duration) {
	var out []Phase
	prev := p.Start
	begin := p.Start
	for _, m := range milestones {
		t, ok := p.Marks[m]
		if !ok {
			continue
		}
		if p.before[m] {
			prev, begin = t, t
			continue
		}
		if t.Before(prev) {
			t = prev // two milestones seen in one poll, one timed by the coordinator
		}
		out = append(out, Phase{Name: phaseNames[m], Took: t.Sub(prev)})
		prev = t
	}
	return out, prev.Sub(begin)
}

// Done reports whether the machine has got as far as the lab takes it.
func (p *Progress) Done(withImage bool) bool {
	if p.Machine == nil {
		return false
	}
	if !withImage {
		return true // registered; no role to go further with
	}
	return p.Machine.State == shared.StateReady
}

// Follow watches every VM through the API until each is ready (without an image: has
// registered), a machine fails, or ctx ends. It prints each change as it happens.
func (l *Lab) Follow(ctx context.Context, withImage bool) ([]*Progress, error) {
	out := l.Config.Out
	began := time.Now()
	progress := make([]*Progress, len(l.Machines))
	byMAC := map[string]*Progress{}
	for i, vm := range l.Machines {
		p := &Progress{VM: vm, Marks: map[string]time.Time{}, Start: vm.PoweredOn, lastPct: -1}
		if p.Start.IsZero() {
			p.Start = began
		}
		progress[i] = p
		byMAC[strings.ToLower(vm.MAC())] = p
	}
	say := func(p *Progress, format string, args ...any) {
		fmt.Fprintf(out, "[%7s] %-10s %s\n", fmtDuration(time.Since(l.Started)), shortName(p.VM), fmt.Sprintf(format, args...))
	}
	known := map[shared.MachineID]*Progress{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := l.poll(ctx, byMAC, known, say); err != nil {
			fmt.Fprintf(out, "[%7s] coordinator: %v (retrying)\n", fmtDuration(time.Since(l.Started)), err)
		}
		done, failed := 0, 0
		for _, p := range progress {
			if p.Done(withImage) {
				done++
			}
			if p.Machine != nil && p.Machine.State == shared.StateFailed {
				failed++
			}
		}
		if done == len(progress) {
			return progress, nil
		}
		if failed > 0 && done+failed == len(progress) {
			return progress, fmt.Errorf("%d machine(s) failed; see `rivet machines show ID` and the VM consoles", failed)
		}
		select {
		case <-ctx.Done():
			return progress, fmt.Errorf("stopped following with %d of %d machines done: %w", done, len(progress), ctx.Err())
		case <-tick.C:
		}
	}
}

// poll reads every machine once and reports what changed.
func (l *Lab) poll(ctx context.Context, byMAC map[string]*Progress, known map[shared.MachineID]*Progress,
	say func(*Progress, string, ...any)) error {
	list, err := l.Client.Machines(ctx)
	if err != nil {
		return err
	}
	for _, s := range list {
		p, seen := known[s.ID]
		if seen && p == nil {
			continue // not one of ours
		}
		m, err := l.Client.Machine(ctx, s.ID)
		if err != nil {
			return err
		}
		if !seen {
			p = matchMAC(byMAC, m)
			known[s.ID] = p
			if p == nil {
				continue
			}
		}
		p.observe(m, time.Now(), say)
	}
	return nil
}

func matchMAC(byMAC map[string]*Progress, m *shared.Machine) *Progress {
	macs := m.MACs
	if m.Inventory != nil {
		for _, n := range m.Inventory.NICs {
			macs = append(macs, n.MAC)
		}
	}
	for _, mac := range macs {
		if p := byMAC[strings.ToLower(mac)]; p != nil {
			return p
		}
	}
	return nil
}

// observe records milestones and prints what is new about m.
func (p *Progress) observe(m *shared.Machine, now time.Time, say func(*Progress, string, ...any)) {
	first := p.Machine == nil
	prev := p.Machine
	p.Machine = m
	// A milestone is timed when the coordinator recorded it, if it says (step start and
	// finish), else when this poll saw it.
	markAt := func(name string, at time.Time) bool {
		if _, ok := p.Marks[name]; ok {
			return false
		}
		if at.IsZero() || at.After(now) {
			at = now
		}
		p.Marks[name] = at
		return true
	}
	mark := func(name string) bool { return markAt(name, time.Time{}) }
	if first && p.VM.PoweredOn.IsZero() {
		// A VM that ran already: what it did before is not ours to time.
		p.before = map[string]bool{}
		for _, ms := range reached(m) {
			p.before[ms] = mark(ms)
		}
		say(p, "running already: %s is %s", m.ID, m.State)
		return
	}
	if first && mark(mRegistered) {
		say(p, "PXE boot done: registered as %s from %s (%s agent)", m.ID, orDash(m.Addr), orDash(string(m.Agent.Mode)))
	}
	if len(m.Steps) > 0 && m.Steps[0].StartedAt.Before(now) && !m.Steps[0].StartedAt.IsZero() {
		markAt(mPlanned, m.Steps[0].StartedAt) // planned no later than its first step began
	}
	for _, st := range m.Steps {
		switch {
		case st.Name == "image" && st.Status == shared.StepRunning && st.Progress != nil:
			pct := int(st.Progress.Percent())
			if pct < p.lastPct {
				p.lastPct = -1 // the write began again (after a power cut)
			}
			if pct >= 0 && pct/10 > p.lastPct/10 {
				p.lastPct = pct
				say(p, "image %3d%%  (%s of %s, %s/s)", pct, mib(st.Progress.Done), mib(st.Progress.Total),
					mib(int64(st.Progress.BytesPerSec)))
			}
		case st.Status == shared.StepSucceeded || st.Status == shared.StepSkipped:
			if (st.Name == mDisk || st.Name == mImage) && markAt(st.Name, st.FinishedAt) {
				say(p, "%s step %s", st.Name, st.Status)
			}
		}
	}
	if prev == nil || prev.State != m.State {
		if prev != nil && prev.State == shared.StateLost {
			say(p, "back (gossip and check-ins again): %s", m.State)
		}
		p.stateChanged(m, mark, say)
	}
	if cur := m.CurrentStep(); cur != nil {
		line := cur.Name + " " + string(cur.Status)
		if line != p.lastLog && cur.Status == shared.StepRunning && cur.Name != mImage {
			say(p, "step %s running", cur.Name)
		}
		p.lastLog = line
	}
}

func (p *Progress) stateChanged(m *shared.Machine, mark func(string) bool, say func(*Progress, string, ...any)) {
	switch m.State {
	case shared.StatePlanned, shared.StateProvisioning:
		mark(mPlanned)
		if !p.saidPlanned {
			p.saidPlanned = true
			say(p, "planned: role %s, swarm %s, %d steps", orDash(m.Role), orDash(swarmRole(m)), planLen(m))
		}
	case shared.StateInstalled:
		p.installed(mark, say)
	case shared.StateJoining:
		p.installed(mark, say)
		say(p, "joining the swarm as %s", orDash(swarmRole(m)))
	case shared.StateReady:
		p.installed(mark, say)
		if mark(mReady) {
			say(p, "READY (swarm %s, node %s)", orDash(swarmRole(m)), orDash(m.SwarmNodeID))
		}
	case shared.StateFailed:
		if e := m.LastError; e != nil {
			say(p, "FAILED at step %s: %s %s", orDash(e.Step), e.Message, e.Hint)
		} else {
			say(p, "FAILED")
		}
	default:
		say(p, "state %s", m.State)
	}
}

// installed marks and says the first disk boot's check-in, which a poll may not catch
// before the machine moves on to joining.
func (p *Progress) installed(mark func(string) bool, say func(*Progress, string, ...any)) {
	if mark(mInstalled) {
		say(p, "installed: rebooted from disk, and the agent there checked in (%s mode)", orDash(string(p.Machine.Agent.Mode)))
	}
}

// reached lists the milestones a machine's record shows it has passed.
func reached(m *shared.Machine) []string {
	out := []string{mRegistered}
	if m.Plan != nil {
		out = append(out, mPlanned)
	}
	for _, st := range m.Steps {
		if (st.Name == mDisk || st.Name == mImage) && (st.Status == shared.StepSucceeded || st.Status == shared.StepSkipped) {
			out = append(out, st.Name)
		}
	}
	switch m.State {
	case shared.StateInstalled, shared.StateJoining:
		out = append(out, mInstalled)
	case shared.StateReady:
		out = append(out, mInstalled, mReady)
	}
	return out
}

// Report prints the final table: each machine, the time of each phase and in total,
// then the Swarm as the lab can see it.
func Report(w io.Writer, progress []*Progress, started time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "VM\tMACHINE\tFIRMWARE\tSTATE\tSWARM\tPXE\tPLAN\tDISK\tIMAGE\tREBOOT\tSWARM-JOIN\tTOTAL\t")
	for _, p := range progress {
		id, st, sw := "-", "off", "-"
		if m := p.Machine; m != nil {
			id, st, sw = string(m.ID), string(m.State), orDash(swarmRole(m))
		}
		cells := map[string]string{}
		phases, total := p.Phases()
		for _, ph := range phases {
			cells[ph.Name] = fmtDuration(ph.Took)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t", shortName(p.VM), id, p.VM.Power.Config().Firmware, st, sw)
		for _, name := range []string{"pxe", "plan", "disk", "image", "reboot", "swarm"} {
			fmt.Fprintf(tw, "%s\t", orDash(cells[name]))
		}
		fmt.Fprintf(tw, "%s\t\n", fmtDuration(total))
	}
	tw.Flush()
	fmt.Fprintf(w, "wall time since `lab up` began: %s\n", fmtDuration(time.Since(started)))
}

// Swarm prints `docker node ls` from a manager when its Docker API is reachable from
// the host (tcp 2375), and otherwise the membership the agents recorded with the
// coordinator, saying so.
func Swarm(ctx context.Context, w io.Writer, progress []*Progress) {
	var managers []string
	for _, p := range progress {
		if p.Machine != nil && swarmRole(p.Machine) == shared.SwarmManager {
			managers = append(managers, hostOf(p.Machine.Addr))
		}
	}
	if docker, err := exec.LookPath("docker"); err == nil {
		for _, ip := range managers {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "2375"), time.Second)
			if err != nil {
				continue
			}
			conn.Close()
			cmd := exec.CommandContext(ctx, docker, "-H", "tcp://"+ip+":2375", "node", "ls")
			if out, err := cmd.CombinedOutput(); err == nil {
				fmt.Fprintf(w, "\n$ docker -H tcp://%s:2375 node ls\n%s", ip, out)
				return
			}
		}
	}
	fmt.Fprintf(w, "\nSwarm membership as the agents recorded it with the coordinator (the lab image's\n"+
		"dockerd listens only on its unix socket, so `docker node ls` cannot reach it from the host):\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tHOSTNAME\tADDRESS\tSWARM ROLE\tNODE ID\tSTATE")
	for _, p := range progress {
		if m := p.Machine; m != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, orDash(m.Hostname), orDash(hostOf(m.Addr)),
				orDash(swarmRole(m)), orDash(m.SwarmNodeID), m.State)
		}
	}
	tw.Flush()
}

// swarmRole is the swarm part the machine's plan gives it.
func swarmRole(m *shared.Machine) string {
	if m.Plan == nil {
		return ""
	}
	for _, s := range m.Plan.Steps {
		if s.Swarm != nil {
			return s.Swarm.Role
		}
	}
	return ""
}

func planLen(m *shared.Machine) int {
	if m.Plan == nil {
		return 0
	}
	return len(m.Plan.Steps)
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func shortName(vm *VM) string { return fmt.Sprintf("vm%d", vm.Index) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func fmtDuration(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}
