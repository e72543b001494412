package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/rivetmetal/rivet/shared"
)

func machinesImport(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "machines import", "rivet machines import -f FILE [--output json]")
	file := v.fs.String("f", "", "expected machines, YAML or JSON: a list of {macs, serial, hostname, labels}")
	if err := v.parse(args); err != nil {
		return err
	}
	// Checked here first: every bad row is reported with the file's name, before any call.
	req, err := parseFile(*file, "packaging/config/expected.example.yaml", shared.ParseImport)
	if err != nil {
		return err
	}
	return call(v, func(c *shared.Client) (*shared.ImportResponse, error) { return c.ImportExpected(ctx, req) },
		func(w io.Writer, res *shared.ImportResponse) { fmt.Fprintln(w, res.Message) })
}
