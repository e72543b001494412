package cli

import (
	"context"
	"fmt"
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
	var cf clientFlags
	fs := newFlags(env, "roles apply", "rivet roles apply -f FILE [--dry-run] [--output json]")
	cf.register(fs)
	file := fs.String("f", "", "role file (YAML or JSON; one role, several documents, or {roles: [...]})")
	dryRun := fs.Bool("dry-run", false, "change nothing; show what the planner would do")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("-f FILE is required (see packaging/config/roles.example.yaml)")
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	// Parse locally first: a mistake is reported with the file's name before any call.
	list, err := shared.ParseRoles(data)
	if err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	res, err := c.ApplyRoles(ctx, list, *dryRun)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, res)
	}
	verb := "applied"
	if res.DryRun {
		verb = "would apply (dry run, nothing changed)"
	}
	fmt.Fprintf(env.Stdout, "%s: created %s; updated %s\n", verb, orDash(strings.Join(res.Created, ", ")),
		orDash(strings.Join(res.Updated, ", ")))
	if res.DryRun {
		printMatches(env, res.Matches)
	}
	return nil
}

func printMatches(env *Env, matches []shared.RoleMatch) {
	if len(matches) == 0 {
		fmt.Fprintln(env.Stdout, "no discovered machines to plan")
		return
	}
	rows := make([][]string, 0, len(matches))
	for _, m := range matches {
		rows = append(rows, []string{string(m.MachineID), orDash(m.Role), orDash(m.Swarm), orDash(m.Problem)})
	}
	table(env.Stdout, []string{"MACHINE", "ROLE", "SWARM", "PROBLEM"}, rows)
}

func rolesList(ctx context.Context, env *Env, args []string) error {
	var cf clientFlags
	fs := newFlags(env, "roles ls", "rivet roles ls [--output json]")
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	roles, err := c.Roles(ctx)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, roles)
	}
	rows := make([][]string, 0, len(roles))
	for _, r := range roles {
		rows = append(rows, []string{r.Name, r.Swarm.Role, r.Image.URL, orDash(r.Description)})
	}
	table(env.Stdout, []string{"NAME", "SWARM", "IMAGE", "DESCRIPTION"}, rows)
	return nil
}

func rolesRemove(ctx context.Context, env *Env, args []string) error {
	var cf clientFlags
	fs := newFlags(env, "roles rm", "rivet roles rm NAME")
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: rivet roles rm NAME (see `rivet roles ls`)")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if err := c.DeleteRole(ctx, fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "role %s removed (machines already planned keep their plans)\n", fs.Arg(0))
	return nil
}

func planVerbs() map[string]command {
	return map[string]command{
		"show": {summary: "show a machine's plan, or what the planner would give it", run: planShow},
	}
}

func planShow(ctx context.Context, env *Env, args []string) error {
	var cf clientFlags
	fs := newFlags(env, "plan show", "rivet plan show MACHINE_ID [--output json]")
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	id, err := machineArg(fs, "plan show")
	if err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	m, err := c.Machine(ctx, id)
	if err != nil {
		return err
	}
	if m.Plan != nil {
		if cf.output == "json" {
			return printJSON(env.Stdout, shared.PlanView{State: m.State, Plan: m.Plan, Steps: m.Steps})
		}
		printMachine(env, m)
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
			if cf.output == "json" {
				return printJSON(env.Stdout, mt)
			}
			printMatches(env, []shared.RoleMatch{mt})
			return nil
		}
	}
	return fmt.Errorf("machine %s is %s and has no plan; the planner only plans discovered machines", id, m.State)
}
