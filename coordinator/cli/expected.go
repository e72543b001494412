package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/rivetmetal/rivet/shared"
)

func machinesImport(ctx context.Context, env *Env, args []string) error {
	var cf clientFlags
	fs := newFlags(env, "machines import", "rivet machines import -f FILE [--output json]")
	cf.register(fs)
	file := fs.String("f", "", "expected machines, YAML or JSON: a list of {macs, serial, hostname, labels}")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("-f FILE is required (see packaging/config/expected.example.yaml)")
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	// Checked here first: every bad row is reported with the file's name, before any call.
	req, err := shared.ParseImport(data)
	if err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	res, err := c.ImportExpected(ctx, req)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, res)
	}
	fmt.Fprintln(env.Stdout, res.Message)
	return nil
}
