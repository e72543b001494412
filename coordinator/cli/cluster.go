package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

func runMembers(ctx context.Context, env *Env, args []string) error {
	var cf clientFlags
	fs := newFlags(env, "members", "rivet members [--output json]")
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	m, err := c.Members(ctx)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, m)
	}
	rows := [][]string{}
	for _, p := range m.Raft {
		role := "follower"
		if p.Leader {
			role = "leader"
		}
		rows = append(rows, []string{p.ID, p.Address, orDash(p.APIAddr), p.Suffrage, role})
	}
	fmt.Fprintln(env.Stdout, "Coordinators (Raft):")
	table(env.Stdout, []string{"ID", "RAFT", "API", "SUFFRAGE", "ROLE"}, rows)
	counts := map[string]int{}
	for _, s := range m.Serf {
		counts[s.Status]++
	}
	parts := []string{}
	for st, n := range counts {
		parts = append(parts, fmt.Sprintf("%d %s", n, st))
	}
	fmt.Fprintf(env.Stdout, "\nGossip pool (Serf): %d members %s\n", len(m.Serf), orDash(strings.Join(parts, ", ")))
	return nil
}

func runHealth(ctx context.Context, env *Env, args []string) error {
	var cf clientFlags
	fs := newFlags(env, "health", "rivet health [--output json]")
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	h, err := c.Health(ctx)
	if err != nil && shared.StatusOf(err) != 503 {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, h)
	}
	fmt.Fprintf(env.Stdout, "status %s; node %s is %s; leader %s (%s); %d voters; applied index %d; %d machines; version %s\n",
		h.Status, h.NodeID, h.RaftState, orDash(h.Leader), orDash(h.LeaderAPI), h.Voters, h.AppliedIndex, h.Machines, h.Version)
	return err
}

func runDigest(ctx context.Context, env *Env, args []string) error {
	var cf clientFlags
	fs := newFlags(env, "digest", "rivet digest [--output json]")
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	d, err := c.Digest(ctx)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, d)
	}
	fmt.Fprintf(env.Stdout, "%s at index %d\n", d.SHA256, d.Index)
	return nil
}

func tokensVerbs() map[string]command {
	return map[string]command{
		"create": {summary: "create a token (admin, viewer or enrol); its secret is shown once", run: tokensCreate},
		"ls":     {summary: "list tokens (never their secrets)", run: tokensList},
		"rm":     {summary: "revoke a token", run: tokensRemove},
	}
}

func tokensCreate(ctx context.Context, env *Env, args []string) error {
	var cf clientFlags
	fs := newFlags(env, "tokens create", "rivet tokens create --name NAME --role admin|viewer|enrol")
	cf.register(fs)
	name := fs.String("name", "", "token name, e.g. alice or rack-12-enrol")
	role := fs.String("role", string(shared.TokenViewer), "admin (reads and acts), viewer (reads) or enrol (registers machines)")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	t, err := c.CreateToken(ctx, &shared.TokenRequest{Name: *name, Role: shared.TokenRole(*role)})
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, t)
	}
	fmt.Fprintf(env.Stdout, "token %s (%s, id %s):\n%s\nThis secret is shown only now.\n", t.Name, t.Role, t.ID, t.Secret)
	return nil
}

func tokensList(ctx context.Context, env *Env, args []string) error {
	var cf clientFlags
	fs := newFlags(env, "tokens ls", "rivet tokens ls [--output json]")
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	ts, err := c.Tokens(ctx)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, ts)
	}
	rows := [][]string{}
	for _, t := range ts {
		rows = append(rows, []string{t.ID, t.Name, string(t.Role), t.CreatedAt.Format("2006-01-02 15:04")})
	}
	table(env.Stdout, []string{"ID", "NAME", "ROLE", "CREATED"}, rows)
	return nil
}

func tokensRemove(ctx context.Context, env *Env, args []string) error {
	var cf clientFlags
	fs := newFlags(env, "tokens rm", "rivet tokens rm TOKEN_ID")
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: rivet tokens rm TOKEN_ID (see `rivet tokens ls`)")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if err := c.DeleteToken(ctx, fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "token %s revoked\n", fs.Arg(0))
	return nil
}
