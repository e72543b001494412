package swarm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/docker/docker/api/types/swarm"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

// init creates the swarm with this node as its first manager.
func (e *Executor) init(ctx context.Context, s *shared.SwarmStep) error {
	adv := e.advertise(s)
	req := swarm.InitRequest{
		ListenAddr:    e.cfg.ListenAddr,
		AdvertiseAddr: adv,
		Spec:          swarm.Spec{Annotations: swarm.Annotations{Labels: map[string]string{LabelInitBy: string(e.cfg.MachineID)}}},
	}
	nodeID, err := e.docker.SwarmInit(ctx, req)
	if err != nil {
		err = dockerErr("creating the swarm (swarm init)", err, nil)
		if adv == "" {
			err = step.WithHint(err, "the node has no advertise address: give the agent its address, or set advertise_addr in the plan")
		}
		return err
	}
	e.log.Info("created the swarm", "node_id", nodeID, "advertise_addr", adv)
	return nil
}

// join makes the node join the swarm with the coordinator's token.
func (e *Executor) join(ctx context.Context, s *shared.SwarmStep, j *shared.SwarmJoin) error {
	if j.Token == "" || len(j.RemoteAddrs) == 0 {
		return step.WithHint(errors.New("the coordinator gave no join token or no manager address"),
			"the first manager may not have created the swarm yet; the step is retried")
	}
	req := swarm.JoinRequest{
		ListenAddr:    e.cfg.ListenAddr,
		AdvertiseAddr: e.advertise(s),
		RemoteAddrs:   j.RemoteAddrs,
		JoinToken:     j.Token,
	}
	if err := e.docker.SwarmJoin(ctx, req); err != nil {
		return step.WithHint(dockerErr(fmt.Sprintf("joining the swarm at %s as a %s", strings.Join(j.RemoteAddrs, ", "), j.Role),
			err, []string{j.Token}), "check that the node reaches a manager on TCP 2377 and that the coordinator's tokens are current")
	}
	e.log.Info("joined the swarm", "role", j.Role, "managers", j.RemoteAddrs)
	return nil
}

// advertise is the step's advertise address, else the agent's own, else "" (dockerd picks).
func (e *Executor) advertise(s *shared.SwarmStep) string {
	if s.AdvertiseAddr != "" {
		return s.AdvertiseAddr
	}
	return e.cfg.AdvertiseAddr
}

// checkMember decides whether a node that is already in a swarm is in the one the
// coordinator names, in the role the plan wants. It changes nothing.
func (e *Executor) checkMember(j *shared.SwarmJoin, info swarm.Info) error {
	have := clusterID(info)
	switch {
	case have != "" && j.ClusterID != "":
		if have != j.ClusterID {
			return anotherSwarm("swarm "+have, "swarm "+j.ClusterID)
		}
	case have != "" && j.Init:
		// The coordinator knows no swarm yet. If this machine created this one in an
		// earlier run that died before reporting, adopt it; anything else is foreign.
		if by := info.Cluster.Spec.Labels[LabelInitBy]; by != string(e.cfg.MachineID) {
			return anotherSwarm("swarm "+have, "a new swarm created by this machine")
		}
		e.log.Info("found the swarm this machine created in an earlier run", "cluster_id", have)
	default:
		// A worker cannot see its swarm's id: the managers it talks to identify the swarm.
		if !sharesManager(info.RemoteManagers, j.RemoteAddrs) {
			return anotherSwarm("the swarm managed by "+peerAddrs(info.RemoteManagers),
				"the swarm managed by "+orNone(strings.Join(j.RemoteAddrs, ", ")))
		}
	}
	return roleMismatch(info, j.Role)
}

// member waits until the node is an active member in the wanted role and returns its
// state. A node that settles in the other role is a permanent failure: the coordinator
// handed the wrong token, or someone changed the node by hand.
func (e *Executor) member(ctx context.Context, j *shared.SwarmJoin, secrets []string) (swarm.Info, error) {
	wantManager := j.Role == shared.SwarmManager
	info, err := e.waitInfo(ctx, secrets, func(info swarm.Info) bool {
		return info.LocalNodeState == swarm.LocalNodeStateActive && info.NodeID != "" &&
			info.ControlAvailable == wantManager && (!wantManager || info.Cluster != nil)
	})
	if err != nil {
		if info.LocalNodeState == swarm.LocalNodeStateActive {
			if rerr := roleMismatch(info, j.Role); rerr != nil {
				return info, rerr
			}
		}
		return info, fmt.Errorf("node did not become an active swarm %s (state %s, %s): %w",
			j.Role, info.LocalNodeState, redact(info.Error, secrets), err)
	}
	if have := clusterID(info); wantManager && j.ClusterID != "" && have != j.ClusterID {
		return info, anotherSwarm("swarm "+have, "swarm "+j.ClusterID)
	}
	return info, nil
}

// report tells the coordinator the node's id; a manager adds the swarm's id and its own
// address, and the first manager the join tokens. When the coordinator answers that
// every planned manager has joined, a manager rotates the manager join token (the one
// handed out is then useless) and reports the new one.
func (e *Executor) report(ctx context.Context, j *shared.SwarmJoin, info swarm.Info, secrets []string) error {
	r := &shared.SwarmReport{NodeID: info.NodeID}
	if info.ControlAvailable {
		_, port, _ := net.SplitHostPort(e.cfg.ListenAddr)
		r.ClusterID = clusterID(info)
		r.Addr = net.JoinHostPort(info.NodeAddr, port)
		if j.Init {
			sw, err := e.docker.SwarmInspect(ctx)
			if err != nil {
				return dockerErr("reading the swarm's join tokens", err, secrets)
			}
			r.ManagerToken, r.WorkerToken = sw.JoinTokens.Manager, sw.JoinTokens.Worker
			secrets = append(secrets, r.ManagerToken, r.WorkerToken)
		}
	}
	answer, err := e.send(ctx, r, secrets)
	if err != nil || !answer.RotateManagerToken || !info.ControlAvailable {
		return err
	}
	token, err := e.rotateManagerToken(ctx, secrets)
	if err != nil {
		return err
	}
	r.ManagerToken, r.WorkerToken, r.Rotated = token, "", true
	_, err = e.send(ctx, r, append(secrets, token))
	return err
}

// send delivers a swarm report.
func (e *Executor) send(ctx context.Context, r *shared.SwarmReport, secrets []string) (*shared.SwarmReportAnswer, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("swarm report: %w", err)
	}
	answer, err := e.cfg.Coordinator.SwarmReport(ctx, e.cfg.MachineID, r)
	if err != nil {
		// The coordinator's error may quote the request: keep the tokens out of it.
		return nil, errors.New("telling the coordinator the node's swarm identity: " + redact(err.Error(), secrets))
	}
	return answer, nil
}

// rotateManagerToken makes the swarm issue a new manager join token and returns it.
func (e *Executor) rotateManagerToken(ctx context.Context, secrets []string) (string, error) {
	sw, err := e.docker.SwarmInspect(ctx)
	if err != nil {
		return "", dockerErr("reading the swarm before rotating its manager token", err, secrets)
	}
	secrets = append(secrets, sw.JoinTokens.Manager, sw.JoinTokens.Worker)
	if err := e.docker.SwarmUpdate(ctx, sw.Version, sw.Spec, swarm.UpdateFlags{RotateManagerToken: true}); err != nil {
		return "", dockerErr("rotating the swarm's manager join token", err, secrets)
	}
	after, err := e.docker.SwarmInspect(ctx)
	if err != nil {
		return "", dockerErr("reading the rotated manager token", err, secrets)
	}
	if after.JoinTokens.Manager == "" || after.JoinTokens.Manager == sw.JoinTokens.Manager {
		return "", errors.New("dockerd accepted the manager token rotation but the token did not change")
	}
	e.log.Info("rotated the swarm's manager join token")
	return after.JoinTokens.Manager, nil
}

// roleMismatch says what to do when the node's swarm role is not the planned one.
func roleMismatch(info swarm.Info, want string) error {
	switch {
	case want == shared.SwarmManager && !info.ControlAvailable:
		return step.Permanent(step.WithHint(
			fmt.Errorf("node %s is a worker in the swarm, but the plan wants a manager", info.NodeID),
			fmt.Sprintf("promote it with `docker node promote %s` on a manager, then retry the step", info.NodeID)))
	case want == shared.SwarmWorker && info.ControlAvailable:
		return step.Permanent(step.WithHint(
			fmt.Errorf("node %s is a manager in the swarm, but the plan wants a worker", info.NodeID),
			fmt.Sprintf("demote it with `docker node demote %s`, then retry the step", info.NodeID)))
	}
	return nil
}

// anotherSwarm is the permanent failure of a node that belongs to a swarm Rivet did not
// plan: leaving it would take its workloads down, so only an operator may decide.
func anotherSwarm(have, want string) error {
	return step.Permanent(step.WithHint(fmt.Errorf("node is in %s, plan wants %s", have, want),
		"run `docker swarm leave --force` on it or retire the machine"))
}

// sharesManager reports whether any manager the node knows is one the coordinator names.
func sharesManager(peers []swarm.Peer, addrs []string) bool {
	want := map[string]bool{}
	for _, a := range addrs {
		want[withPort(a)] = true
	}
	for _, p := range peers {
		if want[withPort(p.Addr)] {
			return true
		}
	}
	return false
}

func withPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(addr, "2377")
}

func peerAddrs(peers []swarm.Peer) string {
	addrs := make([]string, len(peers))
	for i, p := range peers {
		addrs[i] = p.Addr
	}
	return orNone(strings.Join(addrs, ", "))
}

func orNone(s string) string {
	if s == "" {
		return "(no managers known)"
	}
	return s
}

// tokenPattern matches swarm join tokens, so that one we were never told about (a
// dockerd error quoting a token) is cut out too.
var tokenPattern = regexp.MustCompile(`SWMTKN-[0-9]+-[0-9A-Za-z-]+`)

// redact removes the secrets and anything shaped like a join token from s.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return tokenPattern.ReplaceAllString(s, "SWMTKN-[redacted]")
}

// dockerErr describes a failed dockerd call without wrapping it: the original error's
// text may hold a token, and a wrapped error could be unwrapped and printed.
func dockerErr(what string, err error, secrets []string) error {
	return errors.New(what + ": " + redact(err.Error(), secrets))
}
