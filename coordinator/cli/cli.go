// Package cli is the `rivet` command: the coordinator daemon and the operator verbs.
// Run is the whole program; main only wires signals and the exit code.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

// Env is what a command runs with.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
}

// command is a command or a verb: it runs, or it dispatches to its verbs. Help lists
// verbs from the same table that dispatches them, so it never names one that is not there.
type command struct {
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
	verbs   func() map[string]command
}

func commands() map[string]command {
	return map[string]command{
		"coordinator": {summary: "run a coordinator (the embedded default, or one of a 3/5 node cluster)", run: runCoordinator},
		"machines":    {summary: "follow and act on machines", verbs: machinesVerbs},
		"roles":       {summary: "manage the roles machines are planned from", verbs: rolesVerbs},
		"plan":        {summary: "show what the planner would do with a machine", verbs: planVerbs},
		"members":     {summary: "show the coordinators (Raft) and the gossip pool (Serf); plan an upgrade", verbs: membersVerbs},
		"tokens":      {summary: "create, list and revoke operator and enrolment tokens", verbs: tokensVerbs},
		"health":      {summary: "show this coordinator's health", run: runHealth},
		"digest":      {summary: "print the digest of the replicated state", run: runDigest},
		"lab":         {summary: "bring a lab of PXE-booting VMs up or down", verbs: labVerbs},
		"version":     {summary: "print the version", run: runVersion},
	}
}

// Run runs the rivet command line.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	env := &Env{Stdout: stdout, Stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return nil
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		usage(stderr)
		return fmt.Errorf("unknown command %q", args[0])
	}
	var err error
	if cmd.verbs != nil {
		err = subcommand(ctx, env, args[0], args[1:], cmd.verbs())
	} else {
		err = cmd.run(ctx, env, args[1:])
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "rivet %s — bare metal to Docker Swarm\n\nUsage: rivet COMMAND [flags]\n\nCommands:\n", shared.Version)
	cmds := commands()
	for _, n := range slices.Sorted(maps.Keys(cmds)) {
		fmt.Fprintf(w, "  %-12s %s\n", n, cmds[n].summary)
		if cmds[n].verbs != nil {
			fmt.Fprintf(w, "  %-12s verbs: %s\n", "", strings.Join(slices.Sorted(maps.Keys(cmds[n].verbs())), ", "))
		}
	}
	fmt.Fprintf(w, "\nRun `rivet COMMAND --help` for a command's flags or verbs, `rivet COMMAND VERB --help` for a verb's.\n"+
		"Client commands read RIVET_SERVER, RIVET_TOKEN and RIVET_CA_FINGERPRINT, or --env-file\n"+
		"(a coordinator writes DATA_DIR/operator.env when it creates a cluster).\n")
}

func runVersion(_ context.Context, env *Env, args []string) error {
	if err := parse(newFlags(env, "version", "rivet version"), args); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, shared.Version)
	return nil
}

// subcommand dispatches "rivet NOUN VERB ..." to a verb table.
func subcommand(ctx context.Context, env *Env, noun string, args []string, verbs map[string]command) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(env.Stdout, "Usage: rivet %s VERB [flags]\n\nVerbs:\n", noun)
		for _, n := range slices.Sorted(maps.Keys(verbs)) {
			fmt.Fprintf(env.Stdout, "  %-10s %s\n", n, verbs[n].summary)
		}
		return nil
	}
	v, ok := verbs[args[0]]
	if !ok {
		return fmt.Errorf("unknown verb %q for `rivet %s` (see `rivet %s --help`)", args[0], noun, noun)
	}
	return v.run(ctx, env, args[1:])
}

// clientFlags are the flags every client command shares.
type clientFlags struct {
	server, token, caFingerprint, envFile, output string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "", "coordinator API URL(s), comma-separated (env RIVET_SERVER)")
	fs.StringVar(&c.token, "token", "", "operator token (env RIVET_TOKEN)")
	fs.StringVar(&c.caFingerprint, "ca-fingerprint", "", "cluster CA fingerprint sha256:... (env RIVET_CA_FINGERPRINT)")
	fs.StringVar(&c.envFile, "env-file", os.Getenv("RIVET_ENV_FILE"), "read RIVET_* settings from this file (e.g. DATA_DIR/operator.env)")
	fs.StringVar(&c.output, "output", "text", "output format: text or json")
}

// client builds an API client from flags, then the env file, then the environment.
func (c *clientFlags) client() (*shared.Client, error) {
	if c.output != "text" && c.output != "json" {
		return nil, fmt.Errorf("--output %q: want text or json", c.output)
	}
	var file shared.OperatorCredentials
	if c.envFile != "" {
		var err error
		if file, err = readEnvFile(c.envFile); err != nil {
			return nil, err
		}
	}
	pick := func(flagVal, key, fileVal string) string {
		return firstSet(flagVal, os.Getenv(key), fileVal)
	}
	server := pick(c.server, shared.EnvServer, strings.Join(file.Servers, ","))
	return shared.NewClient(shared.ClientConfig{URLs: shared.SplitServers(server),
		Token:         pick(c.token, shared.EnvToken, file.Token),
		CAFingerprint: pick(c.caFingerprint, shared.EnvCAFingerprint, file.CAFingerprint)})
}

// readEnvFile reads an --env-file: a copy of a coordinator's operator.env, or a file
// holding some of its keys (the rest come from flags or the environment).
func readEnvFile(path string) (shared.OperatorCredentials, error) {
	creds, err := shared.ReadOperatorCredentials(path)
	if err != nil && !errors.Is(err, shared.ErrCredentialsIncomplete) {
		return creds, fmt.Errorf("--env-file: %w", err)
	}
	return creds, nil
}

// newFlags makes a flag set whose --help prints the usage line and the flags.
func newFlags(env *Env, name, usageLine string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stdout, "Usage: %s\n\nFlags:\n", usageLine)
		fs.SetOutput(env.Stdout)
		fs.PrintDefaults()
		fs.SetOutput(env.Stderr)
	}
	return fs
}

// parse parses args allowing flags after positional arguments, as operators type them
// (`rivet machines show ID --output json`); "--" ends the flags.
func parse(fs *flag.FlagSet, args []string) error {
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil && !isBoolFlag(f) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		default:
			positional = append(positional, a)
		}
	}
	return fs.Parse(append(append(flags, "--"), positional...))
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
