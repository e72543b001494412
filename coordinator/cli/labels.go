package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/rivetmetal/rivet/shared"
)

const labelUsage = "rivet machines label [--selector k=v[,k=v]] [MACHINE_ID|EXPECTED_NAME ...] key=value key- ..."

// machinesLabel sets (key=value) and removes (key-) operator labels on the machines
// named (ids, or the host names of imported rows not yet matched) and on every machine
// the selector matches: one write, all of them or none.
func machinesLabel(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "machines label", labelUsage)
	selector := v.fs.String("selector", "", "also every machine (and expected machine) whose operator labels include these, k=v[,k=v]")
	if err := v.parse(args); err != nil {
		return err
	}
	req := &shared.LabelRequest{}
	var changes []string
	for _, a := range v.fs.Args() {
		if shared.IsLabelArg(a) {
			changes = append(changes, a)
		} else {
			req.Refs = append(req.Refs, a)
		}
	}
	var err error
	if req.Set, req.Remove, err = shared.ParseLabelArgs(changes); err != nil {
		return fmt.Errorf("%w\nusage: %s", err, labelUsage)
	}
	if *selector != "" {
		if req.Selector, err = shared.ParseSelector(*selector); err != nil {
			return err
		}
	}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("%w\nusage: %s", err, labelUsage)
	}
	return call(v, func(c *shared.Client) (*shared.LabelResponse, error) { return c.SetLabels(ctx, req) },
		func(w io.Writer, res *shared.LabelResponse) { fmt.Fprintln(w, res.Message) })
}
