package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

func rolesVerbs() map[string]command {
	return map[string]command{
		"apply": {summary: "create or replace roles from a YAML or JSON file", run: rolesApply},
		"ls":    {summary: "list roles", run: rolesList},
		"rm":    {summary: "remove a role", run: rolesRemove},
	}
}

func rolesApply(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "roles apply", "rivet roles apply -f FILE [--dry-run] [--output json]")
	file := v.fs.String("f", "", "role file (YAML or JSON; one role, several documents, or {roles: [...]})")
	dryRun := v.fs.Bool("dry-run", false, "change nothing; show what the planner would do")
	if err := v.parse(args); err != nil {
		return err
	}
	// Parse locally first: a mistake is reported with the file's name before any call.
	list, err := parseFile(*file, "packaging/config/roles.example.yaml", shared.ParseRoles)
	if err != nil {
		return err
	}
	return call(v, func(c *shared.Client) (*shared.ApplyResult, error) { return c.ApplyRoles(ctx, list, *dryRun) },
		func(w io.Writer, res *shared.ApplyResult) {
			verb := "applied"
			if res.DryRun {
				verb = "would apply (dry run, nothing changed)"
			}
			fmt.Fprintf(w, "%s: created %s; updated %s\n", verb, orDash(strings.Join(res.Created, ", ")),
				orDash(strings.Join(res.Updated, ", ")))
			if res.DryRun {
				printMatches(w, res.Matches)
			}
		})
}

// parseFile reads the file a -f flag names and parses it locally, so that a mistake is
// reported with the file's name before any call; example is where a sample file is.
func parseFile[T any](file, example string, parse func([]byte) (T, error)) (T, error) {
	var zero T
	if file == "" {
		return zero, fmt.Errorf("-f FILE is required (see %s)", example)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return zero, err
	}
	v, err := parse(data)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", file, err)
	}
	return v, nil
}

func printMatches(w io.Writer, matches []shared.RoleMatch) {
	if len(matches) == 0 {
		fmt.Fprintln(w, "no discovered machines to plan")
		return
	}
	rows := make([][]string, 0, len(matches))
	for _, m := range matches {
		rows = append(rows, []string{string(m.MachineID), orDash(m.Role), orDash(m.Swarm), orDash(m.Problem)})
	}
	table(w, []string{"MACHINE", "ROLE", "SWARM", "PROBLEM"}, rows)
}

func rolesList(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "roles ls", "rivet roles ls [--output json]")
	if err := v.parse(args); err != nil {
		return err
	}
	return call(v, func(c *shared.Client) ([]shared.Role, error) { return c.Roles(ctx) }, func(w io.Writer, roles []shared.Role) {
		rows := make([][]string, 0, len(roles))
		for _, r := range roles {
			rows = append(rows, []string{r.Name, r.Swarm.Role, r.Image.URL, orDash(r.Description)})
		}
		table(w, []string{"NAME", "SWARM", "IMAGE", "DESCRIPTION"}, rows)
	})
}

func rolesRemove(ctx context.Context, env *Env, args []string) error {
	return remove(newVerb(env, "roles rm", "rivet roles rm NAME"), args, "usage: rivet roles rm NAME (see `rivet roles ls`)",
		func(c *shared.Client, name string) error { return c.DeleteRole(ctx, name) },
		"role %s removed (machines already planned keep their plans)")
}

func planVerbs() map[string]command {
	return map[string]command{
		"show": {summary: "show a machine's plan, or what the planner would give it", run: planShow},
	}
}

func planShow(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "plan show", "rivet plan show MACHINE_ID [--output json]")
	c, m, err := v.machine(ctx, args)
	if err != nil {
		return err
	}
	id := m.ID
	if m.Plan != nil {
		if v.json() {
			return printJSON(env.Stdout, shared.PlanView{State: m.State, Plan: m.Plan, Steps: m.Steps})
		}
		printMachine(env.Stdout, m)
		return nil
	}
	// No plan yet: ask for a dry run with the current roles.
	roles, err := c.Roles(ctx)
	if err != nil {
		return err
	}
	if len(roles) == 0 {
		return fmt.Errorf("machine %s has no plan and there are no roles: apply one with `rivet roles apply -f FILE`", id)
	}
	res, err := c.ApplyRoles(ctx, &shared.RoleList{Roles: roles}, true)
	if err != nil {
		return err
	}
	for _, mt := range res.Matches {
		if mt.MachineID == id {
			return output(v, mt, func(w io.Writer, mt shared.RoleMatch) { printMatches(w, []shared.RoleMatch{mt}) })
		}
	}
	return fmt.Errorf("machine %s is %s and has no plan; the planner only plans discovered machines", id, m.State)
}
