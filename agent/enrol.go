package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/internal/ctxtime"
	"github.com/rivetmetal/rivet/shared"
)

// errNoCredentials: no boot ticket, no enrolment token and no kept machine token.
// Retrying cannot help; the operator must configure a token.
var errNoCredentials = errors.New("no boot ticket, no enrolment token and no machine token in the state dir: " +
	"network-boot the machine from a Rivet coordinator (its iPXE script carries a ticket), or " +
	"set --token-file (or enrol_token_file: in the config file); create one with `rivet tokens create --role enrol`")

// enrol gets the machine its identity, retrying with backoff until it works or ctx
// ends. The coordinator derives the machine id from the hardware, so a restart gets the
// same id, and it lets a registration speak for an existing machine only with proof:
//
//   - the machine token kept in the state dir (a restart, or the installed OS after the
//     handoff): it refreshes the record and gets a new token, the old one stops working;
//   - a boot ticket from the kernel command line (RAM mode): single use, bound to the
//     MAC that booted; accepted for an existing machine only while the coordinator
//     expects it to network-boot;
//   - an enrolment token (service mode on a host installed by hand): new machines only.
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
	if a.cfg.EnrolToken == "" && a.cfg.Ticket == "" && kept == nil {
		return errNoCredentials
	}
	req := &shared.RegisterRequest{Inventory: *inv, Labels: a.cfg.Labels, Mode: a.cfg.Mode,
		Version: shared.Version, Addr: a.advertiseIP(), Attempt: newAttempt()}
	wait := backoff{min: time.Second, max: time.Minute}
	for {
		for _, cred := range a.credentials(kept) {
			err := a.register(ctx, base, cred.token, req)
			if err == nil {
				return nil
			}
			a.explain("registration with the "+cred.name, err)
			switch {
			case cred.name == credMachine && isRefusal(err):
				kept = nil // rotated or revoked: it will not work again
				_ = removeState(a.cfg.StateDir)
			case cred.name == credTicket && isRefusal(err):
				a.cfg.Ticket = "" // spent or refused: a ticket is never good twice
			}
		}
		if a.cfg.EnrolToken == "" && a.cfg.Ticket == "" && kept == nil {
			return fmt.Errorf("every credential was refused: %w", errNoCredentials)
		}
		if err := ctxtime.Sleep(ctx, wait.next()); err != nil {
			return err
		}
	}
}

// newAttempt is the random value that makes retries of one registration recognisable
// as such (see shared.RegisterRequest.Attempt).
func newAttempt() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Credential names, as the agent's messages say them.
const (
	credMachine = "kept machine token"
	credTicket  = "boot ticket"
	credEnrol   = "enrolment token"
)

type credential struct{ name, token string }

// credentials lists what the agent may register with, strongest proof first.
func (a *Agent) credentials(kept *keptState) []credential {
	var out []credential
	if kept != nil {
		out = append(out, credential{credMachine, kept.MachineToken})
	}
	if a.cfg.Ticket != "" {
		out = append(out, credential{credTicket, a.cfg.Ticket})
	}
	if a.cfg.EnrolToken != "" {
		out = append(out, credential{credEnrol, a.cfg.EnrolToken})
	}
	return out
}

// isRefusal: the coordinator judged the credential itself (not a network or leader
// problem), so trying the same one again cannot help.
func isRefusal(err error) bool {
	switch shared.StatusOf(err) {
	case 401, 403, 409:
		return true
	}
	return false
}

// register enrols with one credential and keeps the machine token it gets.
func (a *Agent) register(ctx context.Context, base *shared.Client, token string, req *shared.RegisterRequest) error {
	resp, err := base.WithToken(token).Register(ctx, req)
	if err != nil {
		a.metrics.registrations.WithLabelValues("error").Inc()
		return err
	}
	if err := resp.Machine.ID.Validate(); err != nil || resp.MachineToken == "" {
		a.metrics.registrations.WithLabelValues("error").Inc()
		return fmt.Errorf("coordinator's registration answer lacks a machine id or token")
	}
	a.metrics.registrations.WithLabelValues("ok").Inc()
	a.cfg.Ticket = "" // spent by this registration
	if err := saveState(a.cfg.StateDir, &keptState{MachineID: resp.Machine.ID, MachineToken: resp.MachineToken}); err != nil {
		// Not fatal: without the file a restart needs another credential.
		a.log.Warn("machine token not kept; a restart will need a boot ticket or an enrolment token",
			"dir", a.cfg.StateDir, "err", err)
	}
	a.adopt(keptState{MachineID: resp.Machine.ID, MachineToken: resp.MachineToken}, base, resp.Gossip, resp.Machine.State)
	a.mu.Lock()
	a.admitted = resp.Machine.Admitted
	a.mu.Unlock()
	a.log.Info("registered", "machine", resp.Machine.ID, "basis", resp.Basis, "state", resp.Machine.State,
		"admitted", resp.Machine.Admitted)
	a.progress(progressRegistered, "registered as %s (state %s)", resp.Machine.ID, resp.Machine.State)
	if !resp.Machine.Admitted {
		a.progress(progressRegistered, "waiting for the operator to admit this machine: %s", resp.Machine.Unmatched)
	}
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

// reenrol registers again after the coordinator refused the machine token.
func (a *Agent) reenrol(ctx context.Context) error {
	_ = removeState(a.cfg.StateDir) // it no longer works
	if a.cfg.EnrolToken == "" && a.cfg.Ticket == "" {
		return fmt.Errorf("the coordinator refused the machine token and there is no other credential: %w", errNoCredentials)
	}
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
		hint = "the coordinator does not accept this credential: a boot ticket is single-use (network-boot again), " +
			"an enrolment token may be revoked (`rivet tokens create --role enrol`)"
	case status == 409:
		hint = "the coordinator holds this machine (or one of its MACs) under another identity and this credential " +
			"does not prove it is the same machine; the claim is on that machine's timeline for the operator"
	case status == 403:
		hint = "the credential is valid but may not do this; see the message"
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
