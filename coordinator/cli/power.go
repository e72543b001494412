package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

const powerUsage = `rivet machines power MACHINE on|off|cycle|status [--pxe-once] [--output json]
       rivet machines power (--all | --selector KEY=VALUE[,KEY=VALUE] | MACHINE MACHINE...) on|off|cycle|status
                            [--pxe-once] [--batch 20] [--stagger 2s] [--output json]

Sends a power command to the machines' BMCs (from the import's bmc rows). MACHINE is a
machine ID, an expected row's key or a host name. Many machines are switched at most
--batch at once, starts --stagger apart, so a rack is not powered on in one inrush; each
machine's outcome is printed as it comes, then a summary. Every command is on the
machine's timeline with who asked and what the BMC answered. Admin token only.`

func machinesPower(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "machines power", powerUsage)
	pxe := v.fs.Bool("pxe-once", false, "boot from the network once (on or cycle): reinstall or recover through Rivet's agent")
	all := v.fs.Bool("all", false, "every machine and expected machine")
	selector := v.fs.String("selector", "", "machines whose operator labels match, e.g. rack=r1,pool=gpu")
	batch := v.fs.Int("batch", shared.DefaultPowerBatch, "at most this many commands at once")
	stagger := v.fs.Duration("stagger", 0, "least time between two starts, e.g. 2s")
	if err := v.parse(args); err != nil {
		return err
	}
	req, single, err := powerRequest(v.fs.Args(), *pxe, *all, *selector, *batch, *stagger)
	if err != nil {
		return err
	}
	c, err := v.client()
	if err != nil {
		return err
	}
	if single {
		o, err := c.Power(ctx, req.Refs[0], &req.PowerRequest)
		if err != nil {
			return err
		}
		if err := output(v, o, func(w io.Writer, o *shared.PowerOutcome) { fmt.Fprintln(w, powerLine(*o)) }); err != nil {
			return err
		}
		if !o.OK {
			return fmt.Errorf("power %s %s failed", req.Action, req.Refs[0])
		}
		return nil
	}
	n := 0
	start := time.Now()
	res, err := c.PowerBatch(ctx, req, func(o shared.PowerOutcome) {
		n++
		if !v.json() {
			fmt.Fprintf(env.Stdout, "[%d] %s\n", n, powerLine(o))
		}
	})
	if err != nil {
		return err
	}
	if err := output(v, res, func(w io.Writer, r *shared.PowerBatchResult) {
		fmt.Fprintf(w, "power %s: %d machines in %s: %d ok, %d failed\n", req.Action, len(r.Outcomes),
			time.Since(start).Round(100*time.Millisecond), r.Succeeded, r.Failed)
	}); err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("power %s failed on %d of %d machines (see above, and each machine's timeline)", req.Action, res.Failed, len(res.Outcomes))
	}
	return nil
}

// powerRequest builds the request from the positional arguments (machines, then the
// action) and the flags; single is one machine named, with no batch flags.
func powerRequest(args []string, pxe, all bool, selector string, batch int, stagger time.Duration) (*shared.PowerBatchRequest, bool, error) {
	usage := fmt.Errorf("usage: %s", strings.SplitN(powerUsage, "\n\n", 2)[0])
	if len(args) == 0 {
		return nil, false, usage
	}
	req := &shared.PowerBatchRequest{PowerRequest: shared.PowerRequest{Action: shared.PowerAction(args[len(args)-1]), PXEOnce: pxe},
		Refs: args[:len(args)-1], All: all, Batch: batch}
	if stagger > 0 {
		req.Stagger = stagger.String()
	}
	if selector != "" {
		sel, err := parseSelector(selector)
		if err != nil {
			return nil, false, err
		}
		req.Selector = sel
	}
	if err := req.Validate(); err != nil {
		if len(req.Refs) == 0 && !all && selector == "" {
			return nil, false, usage
		}
		return nil, false, err
	}
	return req, len(req.Refs) == 1, nil
}

func parseSelector(s string) (map[string]string, error) {
	sel := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--selector %q: want KEY=VALUE[,KEY=VALUE]", s)
		}
		sel[k] = v
	}
	return sel, nil
}

// powerLine is one machine's outcome as a person reads it.
func powerLine(o shared.PowerOutcome) string {
	name := o.Ref
	if o.Hostname != "" {
		name = o.Hostname
	}
	if id := string(o.MachineID); id != "" && id != name {
		name += " (" + id + ")"
	}
	what := "power " + string(o.Action)
	if o.PXEOnce {
		what += " --pxe-once"
	}
	took := (time.Duration(o.DurationMS) * time.Millisecond).String()
	if !o.OK {
		return fmt.Sprintf("%s: %s FAILED after %s: %s", name, what, took, o.Error)
	}
	return fmt.Sprintf("%s: %s ok in %s, power is %s", name, what, took, orDash(o.State))
}

// powerActionWords lists the actions for help texts.
func powerActionWords() string {
	words := make([]string, 0, len(shared.PowerActions))
	for _, a := range shared.PowerActions {
		words = append(words, string(a))
	}
	return strings.Join(slices.Clip(words), "|")
}
