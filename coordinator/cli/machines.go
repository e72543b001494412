package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

func machinesVerbs() map[string]command {
	verbs := map[string]command{
		"ls":     {summary: "list machines", run: machinesList},
		"show":   {summary: "show one machine: identity, inventory, plan, steps, timeline", run: machinesShow},
		"events": {summary: "print a machine's event timeline", run: machinesEvents},
		"watch":  {summary: "follow the fleet live until it settles (a table on a terminal, lines or JSON otherwise)", run: machinesWatch},
		"import": {summary: "import the expected machines from a CSV, YAML or JSON file (all rows or none)", run: machinesImport},
		"label":  {summary: "set (key=value) and remove (key-) operator labels, by machine or --selector", run: machinesLabel},
		"power":  {summary: "power machines " + powerActionWords() + " through their BMCs, one or many (batched, staggered)", run: machinesPower},
		"reprovision": {summary: "take a ready machine out of the swarm without dropping its services, then plan and install it again",
			run: machinesReprovision},
	}
	for _, act := range shared.Actions {
		verbs[string(act)] = command{summary: actionSummary(act), run: actionVerb(string(act))}
	}
	return verbs
}

func actionSummary(act shared.Action) string {
	return map[shared.Action]string{
		shared.ActionRetry:   "re-run a failed machine's failed step",
		shared.ActionReplan:  "forget a machine's plan and match a role again",
		shared.ActionRelease: "bring a retired machine back as discovered",
		shared.ActionRetire:  "take a machine out of service (boot services stay silent)",
		shared.ActionApprove: "admit a discovered machine: it may get a role, the gossip key and Swarm tokens",
	}[act]
}

func machinesList(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "machines ls", "rivet machines ls [--state STATE] [--role ROLE] [--output json]")
	stateFilter := v.fs.String("state", "", "only machines in this state (expected: imported rows not yet registered)")
	roleFilter := v.fs.String("role", "", "only machines with this role")
	if err := v.parse(args); err != nil {
		return err
	}
	list := func(c *shared.Client) ([]shared.MachineSummary, error) {
		all, err := c.MachinesWithExpected(ctx)
		var ms []shared.MachineSummary
		for _, m := range all {
			if (*stateFilter == "" || string(m.State) == *stateFilter) && (*roleFilter == "" || m.Role == *roleFilter) {
				ms = append(ms, m)
			}
		}
		return ms, err
	}
	return call(v, list, func(w io.Writer, ms []shared.MachineSummary) {
		var reasons notes
		rows := make([][]string, 0, len(ms))
		expected := 0
		for _, m := range ms {
			id := string(m.ID)
			if m.State == shared.StateExpected {
				id, expected = "("+m.Key+")", expected+1
			}
			st := string(m.State)
			if m.Reprovision != "" {
				st += " (reprovision: " + string(m.Reprovision) + ")"
			}
			rows = append(rows, []string{id, st, orDash(m.Role), orDash(m.Hostname),
				orDash(m.Addr), orDash(m.Step), orDash(progressText(m.Progress)), orDash(truncate(m.Error, 60)),
				orDash(reasons.mark(m.Unmatched))})
		}
		table(w, []string{"ID", "STATE", "ROLE", "HOSTNAME", "ADDR", "STEP", "PROGRESS", "ERROR", "NOTE"}, rows)
		reasons.print(w, "Not planned (see `rivet roles apply -f roles.yaml --dry-run`):")
		if expected > 0 {
			fmt.Fprintf(w, "%d machines, of which %d expected: imported, not registered yet (shown by their row's name)\n", len(ms), expected)
			return
		}
		fmt.Fprintf(w, "%d machines\n", len(ms))
	})
}

// notes numbers distinct texts for a table's footnotes: a fleet of 200 machines that no
// role matches shows [1] in each row and the reason once under the table.
type notes struct {
	texts  []string
	counts []int
	index  map[string]int
}

// mark returns text's footnote mark, "" for no text.
func (n *notes) mark(text string) string {
	if text == "" {
		return ""
	}
	i, ok := n.index[text]
	if !ok {
		if n.index == nil {
			n.index = map[string]int{}
		}
		i = len(n.texts)
		n.index[text] = i
		n.texts, n.counts = append(n.texts, text), append(n.counts, 0)
	}
	n.counts[i]++
	return fmt.Sprintf("[%d]", i+1)
}

// print lists the footnotes under title; nothing when there are none.
func (n *notes) print(w io.Writer, title string) {
	if len(n.texts) == 0 {
		return
	}
	fmt.Fprintln(w, title)
	for i, t := range n.texts {
		fmt.Fprintf(w, "  [%d] %s (%d machines)\n", i+1, t, n.counts[i])
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func machineArg(fs interface{ Args() []string }, cmd string) (shared.MachineID, error) {
	if len(fs.Args()) != 1 {
		return "", fmt.Errorf("usage: rivet %s MACHINE_ID (see `rivet machines ls`)", cmd)
	}
	id := shared.MachineID(fs.Args()[0])
	return id, id.Validate()
}

func machinesShow(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "machines show", "rivet machines show MACHINE_ID [--output json]")
	c, m, err := v.machine(ctx, args)
	if err != nil {
		return err
	}
	return output(v, m, func(w io.Writer, m *shared.Machine) {
		printMachine(w, m)
		evs, err := c.Events(ctx, m.ID)
		if err == nil {
			fmt.Fprintln(w, "\nTimeline (latest 10):")
			for _, e := range evs[max(0, len(evs)-10):] {
				fmt.Fprintf(w, "  %s  %-10s %s\n", e.Time.Format("15:04:05"), e.Kind, e.Message)
			}
		}
	})
}

func printMachine(w io.Writer, m *shared.Machine) {
	fmt.Fprintf(w, "Machine   %s (id from %s)\nState     %s\nRole      %s\nBoot      %s\nAddr      %s\nAgent     %s %s, seen %s\n",
		m.ID, m.Basis, m.State, orDash(m.Role), m.Boot, orDash(m.Addr), orDash(string(m.Agent.Mode)), orDash(m.Agent.Version), ago(m.Agent.LastSeen))
	if r := m.Reprovision; r != nil {
		fmt.Fprintf(w, "Reprovision  phase %s since %s (started %s by %s", r.Phase, ago(r.PhaseAt), ago(r.Started), orDash(r.By))
		if r.Via != "" {
			fmt.Fprintf(w, "; boots the agent via %s", r.Via)
		}
		if r.StandIn != "" {
			fmt.Fprintf(w, "; %s stands in as a manager", r.StandIn)
		}
		fmt.Fprintln(w, "); each step is on the timeline below")
	}
	if m.StaticAddress != "" {
		fmt.Fprintf(w, "Static    %s (its expected row's address)\n", m.StaticAddress)
	}
	if len(m.Labels) > 0 {
		keys := make([]string, 0, len(m.Labels))
		for k := range m.Labels {
			keys = append(keys, k+"="+m.Labels[k])
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "Labels    %s\n", strings.Join(keys, ", "))
	}
	if len(m.Facts) > 0 {
		fmt.Fprintf(w, "Facts     %s (the agent's own word: selectors read them only under facts:)\n", shared.LabelsText(m.Facts))
	}
	if m.Unmatched != "" {
		fmt.Fprintf(w, "Not planned: %s\n  (apply a role that matches: `rivet roles apply -f roles.yaml --dry-run`)\n", m.Unmatched)
	}
	if inv := m.Inventory; inv != nil {
		nics := inv.PhysicalNICs() // not loopback, bridges or veths
		fmt.Fprintf(w, "Hardware  %s %s, serial %s; %s, %d cores/%d threads; %s RAM; %d disks, %d NICs, %s firmware\n",
			orDash(inv.System.Vendor), orDash(inv.System.Product), orDash(inv.System.Serial), orDash(inv.CPU.Model),
			inv.CPU.Cores, inv.CPU.Threads, shared.HumanBytes(int64(inv.Memory.TotalBytes)), len(inv.Disks), len(nics),
			orDash(inv.System.Firmware))
		printNICs(w, nics)
	}
	if m.Plan != nil {
		fmt.Fprintf(w, "\nPlan (generation %d):\n", m.Plan.Generation)
		rows := [][]string{}
		for i, st := range m.Plan.Steps {
			s := m.Steps[i]
			rows = append(rows, []string{st.Name, string(st.Kind), string(st.Phase), string(s.Status),
				orDash(progressText(s.Progress)), orDash(truncate(s.Error, 60))})
		}
		table(w, []string{"  STEP", "KIND", "PHASE", "STATUS", "PROGRESS", "ERROR"}, rows)
	}
	if e := m.LastError; e != nil {
		fmt.Fprintf(w, "\nLast error (step %s): %s\n", orDash(e.Step), e.Message)
		if e.Hint != "" {
			fmt.Fprintf(w, "  What to do: %s\n", e.Hint)
		}
		fmt.Fprintf(w, "  Retry with `rivet machines retry %s`.\n", m.ID)
	}
}

func printNICs(w io.Writer, nics []shared.NIC) {
	if len(nics) == 0 {
		return
	}
	rows := make([][]string, 0, len(nics))
	for _, n := range nics {
		link, speed := "down", ""
		if n.Link {
			link = "up"
		}
		if n.SpeedMbps > 0 {
			speed = fmt.Sprintf("%d Mb/s", n.SpeedMbps)
		}
		rows = append(rows, []string{"  " + n.Name, n.MAC, orDash(strings.TrimSpace(n.Vendor + " " + n.Product)),
			orDash(n.Driver), orDash(speed), link, orDash(strings.Join(n.Addrs, " "))})
	}
	table(w, []string{"  NIC", "MAC", "DEVICE", "DRIVER", "SPEED", "LINK", "ADDRS"}, rows)
}

func machinesEvents(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "machines events", "rivet machines events MACHINE_ID [--output json]")
	if err := v.parse(args); err != nil {
		return err
	}
	id, err := v.machineArg()
	if err != nil {
		return err
	}
	return call(v, func(c *shared.Client) ([]shared.Event, error) { return c.Events(ctx, id) }, func(w io.Writer, evs []shared.Event) {
		for _, e := range evs {
			fmt.Fprintf(w, "%s  %-10s %s\n", e.Time.Format("2006-01-02 15:04:05"), e.Kind, e.Message)
		}
	})
}

func actionVerb(act string) func(context.Context, *Env, []string) error {
	return func(ctx context.Context, env *Env, args []string) error {
		v := newVerb(env, "machines "+act, "rivet machines "+act+" MACHINE_ID [--reason TEXT]")
		reason := v.fs.String("reason", "", "why (kept on the machine's timeline)")
		if err := v.parse(args); err != nil {
			return err
		}
		id, err := v.machineArg()
		if err != nil {
			return err
		}
		return call(v, func(c *shared.Client) (*shared.Machine, error) { return c.Action(ctx, id, shared.Action(act), *reason) },
			func(w io.Writer, m *shared.Machine) { fmt.Fprintf(w, "%s: %s done, now %s\n", m.ID, act, m.State) })
	}
}
