package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// errNoCredentials: neither an enrolment token nor a kept machine token. Retrying
// cannot help; the operator must configure a token.
var errNoCredentials = errors.New("no enrolment token and no machine token in the state dir: " +
	"set --token-file (or enrol_token_file: in the config file, or rivet.token= on the kernel command line); " +
	"create one with `rivet tokens create --role enrol`")

// enrol gets the machine its identity, retrying with backoff until it works or ctx
// ends. With an enrolment token it registers (idempotent: the coordinator derives the
// machine id from the hardware, so a restart gets the same id). A machine token kept in
// the state dir is the fallback, and the only way when no enrolment token is configured.
func (a *Agent) enrol(ctx context.Context, inv *shared.Inventory) error {
	base, err := shared.NewClient(shared.ClientConfig{URLs: append([]string(nil), a.cfg.Servers...),
		CAFingerprint: a.cfg.CAFingerprint})
	if err != nil {
		return err
	}
	kept, err := loadState(a.cfg.StateDir)
	if err != nil {
		a.log.Warn("ignoring the kept machine token", "err", err)
	}
	if a.cfg.EnrolToken == "" && kept == nil {
		return errNoCredentials
	}
	req := &shared.RegisterRequest{Inventory: *inv, Labels: a.cfg.Labels, Mode: a.cfg.Mode,
		Version: shared.Version, Addr: a.advertiseIP()}
	wait := backoff{min: time.Second, max: time.Minute}
	for {
		if a.cfg.EnrolToken != "" {
			err := a.register(ctx, base.WithToken(a.cfg.EnrolToken), req)
			if err == nil {
				return nil
			}
			a.explain("registration", err)
		}
		if kept != nil {
			err := a.resume(ctx, base, kept)
			if err == nil {
				return nil
			}
			a.explain("resuming with the kept machine token", err)
		}
		if err := sleep(ctx, wait.next()); err != nil {
			return err
		}
	}
}

// register enrols with the enrolment token and keeps the machine token it gets.
func (a *Agent) register(ctx context.Context, c *shared.Client, req *shared.RegisterRequest) error {
	resp, err := c.Register(ctx, req)
	if err != nil {
		a.metrics.registrations.WithLabelValues("error").Inc()
		return err
	}
	if err := resp.Machine.ID.Validate(); err != nil || resp.MachineToken == "" {
		a.metrics.registrations.WithLabelValues("error").Inc()
		return fmt.Errorf("coordinator's registration answer lacks a machine id or token")
	}
	a.metrics.registrations.WithLabelValues("ok").Inc()
	if err := saveState(a.cfg.StateDir, &keptState{MachineID: resp.Machine.ID, MachineToken: resp.MachineToken}); err != nil {
		// Not fatal: without the file a restart registers again.
		a.log.Warn("machine token not kept; a restart will register again", "dir", a.cfg.StateDir, "err", err)
	}
	a.adopt(keptState{MachineID: resp.Machine.ID, MachineToken: resp.MachineToken}, c, resp.Gossip, resp.Machine.State)
	a.log.Info("registered", "machine", resp.Machine.ID, "basis", resp.Basis, "state", resp.Machine.State)
	a.progress(progressRegistered, "registered as %s (state %s)", resp.Machine.ID, resp.Machine.State)
	return nil
}

// resume proves the kept machine token still works and fetches the gossip pool with it.
func (a *Agent) resume(ctx context.Context, base *shared.Client, kept *keptState) error {
	c := base.WithToken(kept.MachineToken)
	id := kept.MachineID
	g, err := c.Gossip(ctx)
	if err != nil {
		return err
	}
	a.adopt(*kept, base, *g, "")
	a.log.Info("resumed with the kept machine token", "machine", id)
	a.progress(progressRegistered, "resumed as %s", id)
	return nil
}

// adopt makes kept the agent's identity; base is the client without a token.
func (a *Agent) adopt(kept keptState, base *shared.Client, g shared.GossipInfo, st shared.State) {
	a.mu.Lock()
	a.id, a.client, a.gossip, a.token = kept.MachineID, base.WithToken(kept.MachineToken), g, kept.MachineToken
	a.mu.Unlock()
	if st != "" {
		a.setState(st)
	}
}

// reenrol registers again after the coordinator refused the machine token. Without an
// enrolment token there is nothing else to try.
func (a *Agent) reenrol(ctx context.Context) error {
	if a.cfg.EnrolToken == "" {
		return fmt.Errorf("the coordinator refused the machine token and no enrolment token is configured: %w", errNoCredentials)
	}
	_ = removeState(a.cfg.StateDir) // it no longer works
	inv := a.deps.Inventory(ctx)
	if inv == nil {
		return errors.New("inventory collection returned nothing")
	}
	return a.enrol(ctx, inv)
}

// explain logs a failed call with what the operator should fix. Error texts come from
// the client and the coordinator and never carry a token.
func (a *Agent) explain(op string, err error) {
	msg := err.Error()
	var hint string
	switch status := shared.StatusOf(err); {
	case status == 401:
		hint = "the coordinator does not accept this token: check the enrolment token (--token-file, rivet.token=) " +
			"or create one with `rivet tokens create --role enrol`"
	case status == 403:
		hint = "the token is valid but may not register machines: use an enrol (or admin) token"
	case status >= 500 || status == 429:
		hint = "the coordinator is unwell (no leader?); retrying"
	case status != 0:
		hint = "the coordinator refused the request; see the message"
	case strings.Contains(msg, "pinned"):
		hint = "TLS: the coordinator's CA is not the one pinned by --ca-fingerprint / rivet.ca=; " +
			"wrong cluster, or copy the fingerprint again from `rivet coordinator` output"
	case strings.Contains(msg, "certificate") || strings.Contains(msg, "tls:"):
		hint = "TLS handshake failed: is the URL an https Rivet coordinator?"
	default:
		hint = "coordinator unreachable: check the URL, routing and firewall; retrying"
	}
	a.log.Warn(op+" failed", "err", err, "hint", hint)
}

// AdvertiseIP is the address the coordinators and other nodes reach this machine at
// (for executors such as the swarm step); see advertiseIP.
func (a *Agent) AdvertiseIP() string { return a.advertiseIP() }

// advertiseIP is the address the coordinators should reach this agent at: the
// configured one, else the local address of the route towards the first coordinator
// (no packet is sent: connecting a UDP socket only picks the route).
func (a *Agent) advertiseIP() string {
	if adv := a.cfg.GossipAdvertise; adv != "" {
		if host, _, err := net.SplitHostPort(adv); err == nil {
			return host
		}
		return adv
	}
	for _, s := range a.cfg.Servers {
		u, err := url.Parse(s)
		if err != nil {
			continue
		}
		port := u.Port()
		if port == "" {
			port = "443"
		}
		conn, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), port))
		if err != nil {
			continue
		}
		ip := conn.LocalAddr().(*net.UDPAddr).IP.String()
		conn.Close()
		return ip
	}
	return ""
}
