package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/rivetmetal/rivet/shared"
)

// verb is an operator verb that talks to the API: its flag set, with the client flags
// every such verb shares registered, and the Env it prints to.
type verb struct {
	env *Env
	fs  *flag.FlagSet
	cf  clientFlags
}

// newVerb makes a verb's flag set, named name, whose --help prints usageLine. The verb
// adds its own flags to v.fs before v.parse.
func newVerb(env *Env, name, usageLine string) *verb {
	v := &verb{env: env, fs: newFlags(env, name, usageLine)}
	v.cf.register(v.fs)
	return v
}

func (v *verb) parse(args []string) error { return parse(v.fs, args) }

// machineArg is the verb's one positional argument, a machine ID.
func (v *verb) machineArg() (shared.MachineID, error) { return machineArg(v.fs, v.fs.Name()) }

// machine parses args, whose one positional argument is a machine ID, and fetches
// that machine; it returns the client for further calls.
func (v *verb) machine(ctx context.Context, args []string) (*shared.Client, *shared.Machine, error) {
	if err := v.parse(args); err != nil {
		return nil, nil, err
	}
	id, err := v.machineArg()
	if err != nil {
		return nil, nil, err
	}
	c, err := v.client()
	if err != nil {
		return nil, nil, err
	}
	m, err := c.Machine(ctx, id)
	return c, m, err
}

func (v *verb) client() (*shared.Client, error) { return v.cf.client() }

func (v *verb) json() bool { return v.cf.output == "json" }

// call builds the client, asks do and prints its answer: JSON with --output json,
// else as text writes it.
func call[T any](v *verb, do func(*shared.Client) (T, error), text func(io.Writer, T)) error {
	c, err := v.client()
	if err != nil {
		return err
	}
	res, err := do(c)
	if err != nil {
		return err
	}
	return output(v, res, text)
}

// output prints res: JSON with --output json, else as text writes it.
func output[T any](v *verb, res T, text func(io.Writer, T)) error {
	if v.json() {
		return printJSON(v.env.Stdout, res)
	}
	text(v.env.Stdout, res)
	return nil
}

// remove is a `rivet NOUN rm NAME` verb: it deletes the one thing named and says so
// (done is a format for the name); usage is the error for anything but one argument.
func remove(v *verb, args []string, usage string, del func(c *shared.Client, name string) error, done string) error {
	if err := v.parse(args); err != nil {
		return err
	}
	if v.fs.NArg() != 1 {
		return errors.New(usage)
	}
	c, err := v.client()
	if err != nil {
		return err
	}
	if err := del(c, v.fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(v.env.Stdout, done+"\n", v.fs.Arg(0))
	return nil
}
