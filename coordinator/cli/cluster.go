package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

func membersVerbs() map[string]command {
	return map[string]command{
		"ls":            {summary: "list the coordinators with their versions, and the gossip pool", run: membersList},
		"upgrade-check": {summary: "say which coordinator to upgrade next, and whether it is safe now", run: membersUpgradeCheck},
	}
}

func membersList(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "members ls", "rivet members ls [--output json]")
	if err := v.parse(args); err != nil {
		return err
	}
	return call(v, func(c *shared.Client) (*shared.Members, error) { return c.Members(ctx) }, printMembers)
}

func printMembers(w io.Writer, m *shared.Members) {
	rows := [][]string{}
	for _, p := range m.Raft {
		role := "follower"
		if p.Leader {
			role = "leader"
		}
		rows = append(rows, []string{p.ID, p.Address, orDash(p.APIAddr), p.Suffrage, role, peerVersion(p), peerProtocol(p)})
	}
	fmt.Fprintf(w, "Coordinators (Raft), cluster protocol %d:\n", shared.ProtocolOf(m.ClusterProtocol))
	table(w, []string{"ID", "RAFT", "API", "SUFFRAGE", "ROLE", "VERSION", "PROTOCOL"}, rows)
	counts := map[string]int{}
	for _, s := range m.Serf {
		counts[s.Status]++
	}
	parts := []string{}
	for st, n := range counts {
		parts = append(parts, fmt.Sprintf("%d %s", n, st))
	}
	fmt.Fprintf(w, "\nGossip pool (Serf): %d members %s\n", len(m.Serf), orDash(strings.Join(parts, ", ")))
}

func runHealth(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "health", "rivet health [--output json]")
	if err := v.parse(args); err != nil {
		return err
	}
	c, err := v.client()
	if err != nil {
		return err
	}
	// An unhealthy coordinator answers 503 with its health: print it, then fail.
	h, err := c.Health(ctx)
	if err != nil && shared.StatusOf(err) != 503 {
		return err
	}
	if perr := output(v, h, func(w io.Writer, h *shared.Health) {
		fmt.Fprintf(w, "status %s; node %s is %s; leader %s (%s); %d voters; applied index %d; %d machines; version %s\n",
			h.Status, h.NodeID, h.RaftState, orDash(h.Leader), orDash(h.LeaderAPI), h.Voters, h.AppliedIndex, h.Machines, h.Version)
	}); perr != nil {
		return perr
	}
	return err
}

func runDigest(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "digest", "rivet digest [--output json]")
	if err := v.parse(args); err != nil {
		return err
	}
	return call(v, func(c *shared.Client) (*shared.Digest, error) { return c.Digest(ctx) }, func(w io.Writer, d *shared.Digest) {
		fmt.Fprintf(w, "%s at index %d\n", d.SHA256, d.Index)
	})
}

func tokensVerbs() map[string]command {
	return map[string]command{
		"create": {summary: "create a token (admin, viewer or enrol); its secret is shown once", run: tokensCreate},
		"ls":     {summary: "list tokens (never their secrets)", run: tokensList},
		"rm":     {summary: "revoke a token", run: tokensRemove},
	}
}

func tokensCreate(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "tokens create", "rivet tokens create --name NAME --role admin|viewer|enrol")
	name := v.fs.String("name", "", "token name, e.g. alice or rack-12-enrol")
	role := v.fs.String("role", string(shared.TokenViewer), "admin (reads and acts), viewer (reads) or enrol (registers machines)")
	if err := v.parse(args); err != nil {
		return err
	}
	req := &shared.TokenRequest{Name: *name, Role: shared.TokenRole(*role)}
	return call(v, func(c *shared.Client) (*shared.TokenCreated, error) { return c.CreateToken(ctx, req) },
		func(w io.Writer, t *shared.TokenCreated) {
			fmt.Fprintf(w, "token %s (%s, id %s):\n%s\nThis secret is shown only now.\n", t.Name, t.Role, t.ID, t.Secret)
		})
}

func tokensList(ctx context.Context, env *Env, args []string) error {
	v := newVerb(env, "tokens ls", "rivet tokens ls [--output json]")
	if err := v.parse(args); err != nil {
		return err
	}
	return call(v, func(c *shared.Client) ([]shared.TokenInfo, error) { return c.Tokens(ctx) }, func(w io.Writer, ts []shared.TokenInfo) {
		rows := [][]string{}
		for _, t := range ts {
			rows = append(rows, []string{t.ID, t.Name, string(t.Role), t.CreatedAt.Format("2006-01-02 15:04")})
		}
		table(w, []string{"ID", "NAME", "ROLE", "CREATED"}, rows)
	})
}

func tokensRemove(ctx context.Context, env *Env, args []string) error {
	return remove(newVerb(env, "tokens rm", "rivet tokens rm TOKEN_ID"), args,
		"usage: rivet tokens rm TOKEN_ID (see `rivet tokens ls`)",
		func(c *shared.Client, id string) error { return c.DeleteToken(ctx, id) }, "token %s revoked")
}
