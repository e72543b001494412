// Package swarm carries out the plan's swarm step: it makes the node's own dockerd create
// the Docker Swarm (the first manager) or join it as a manager or a worker, with the join
// information the coordinator hands out when the step runs.
//
// The step is idempotent: a node already in the right swarm with the right role is left
// alone (StepSkipped), a node in another swarm is a permanent failure that names both
// swarms, and a crash between "swarm init" and telling the coordinator is recovered by a
// label the init puts on the swarm. Join tokens are secrets: they are never logged and are
// cut out of every error.
package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/client"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

// Coordinator is what the swarm step needs from the coordinator; *shared.Client has it.
type Coordinator interface {
	SwarmJoin(ctx context.Context, id shared.MachineID) (*shared.SwarmJoin, error)
	SwarmReport(ctx context.Context, id shared.MachineID, r *shared.SwarmReport) (*shared.SwarmReportAnswer, error)
}

// LabelInitBy is the swarm label "swarm init" sets to the initialising machine's id. It
// lets a re-run after a crash recognise the swarm this very machine created before it
// could report it, and tell it apart from a foreign swarm.
const LabelInitBy = "io.rivetmetal.rivet.init-by"

// Config configures an Executor.
type Config struct {
	MachineID   shared.MachineID
	Coordinator Coordinator
	// DockerHost is the node's dockerd, e.g. unix:///var/run/docker.sock. Empty: DOCKER_HOST,
	// else the default socket.
	DockerHost string
	// AdvertiseAddr is the address other nodes reach this one at, used when the step names
	// none (the agent's own address). Empty: dockerd chooses, which fails on a machine with
	// several addresses.
	AdvertiseAddr string
	// ListenAddr is where the swarm control plane listens. Default 0.0.0.0:2377.
	ListenAddr string
	// Wait bounds how long the step waits for dockerd to answer and for a join to settle.
	// Default one minute.
	Wait time.Duration
	// PendingWait bounds how long the step waits for the first manager to create the
	// swarm (an installing fleet's managers finish minutes apart); default 15 minutes.
	PendingWait time.Duration
	Logger      *slog.Logger
}

// Executor runs swarm steps against one dockerd.
type Executor struct {
	cfg    Config
	docker *client.Client
	log    *slog.Logger
}

// New returns an Executor for cfg. The dockerd need not be up yet: Run waits for it.
func New(cfg Config) (*Executor, error) {
	if err := cfg.MachineID.Validate(); err != nil {
		return nil, err
	}
	if cfg.Coordinator == nil {
		return nil, errors.New("swarm executor needs a coordinator")
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "0.0.0.0:2377"
	}
	if _, _, err := net.SplitHostPort(cfg.ListenAddr); err != nil {
		return nil, fmt.Errorf("swarm listen address %q: %w", cfg.ListenAddr, err)
	}
	if cfg.PendingWait <= 0 {
		cfg.PendingWait = 15 * time.Minute
	}
	if cfg.Wait <= 0 {
		cfg.Wait = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// API version negotiation is not optional: Debian 12's dockerd speaks API 1.41 and
	// refuses a client that asks for a newer one.
	opts := []client.Opt{client.WithHostFromEnv(), client.WithAPIVersionNegotiation()}
	if cfg.DockerHost != "" {
		opts = append(opts, client.WithHost(cfg.DockerHost))
	}
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", cfg.DockerHost, err)
	}
	return &Executor{cfg: cfg, docker: c, log: cfg.Logger.With("step", "swarm", "machine", cfg.MachineID)}, nil
}

// Close releases the docker client.
func (e *Executor) Close() error { return e.docker.Close() }

// Run makes the node take the part s asks for in the swarm the coordinator names.
func (e *Executor) Run(ctx context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error) {
	if s.Kind != shared.StepSwarm || s.Swarm == nil {
		return shared.StepFailed, step.Permanent(fmt.Errorf("swarm executor got a %s step", s.Kind))
	}
	if progress == nil {
		progress = func(shared.Progress) {}
	}
	const stages = 4
	progress(shared.Progress{Done: 0, Total: stages})
	if err := e.waitDocker(ctx); err != nil {
		return shared.StepFailed, err
	}
	join, err := e.joinInfo(ctx)
	if err != nil {
		return shared.StepFailed, err
	}
	secrets := []string{join.Token}
	if err := checkJoin(join, s.Swarm); err != nil {
		return shared.StepFailed, err
	}
	progress(shared.Progress{Done: 1, Total: stages})
	if err := e.leaveRemovedNode(ctx, s.Swarm.LeaveNode); err != nil {
		return shared.StepFailed, err
	}

	info, err := e.settled(ctx, secrets)
	if err != nil {
		return shared.StepFailed, err
	}
	progress(shared.Progress{Done: 2, Total: stages})
	status := shared.StepSucceeded
	switch {
	case info.LocalNodeState == swarm.LocalNodeStateActive:
		// Already in a swarm: check it is the right one, in the right role, and touch nothing.
		if err := e.checkMember(join, info); err != nil {
			return shared.StepFailed, err
		}
		status = shared.StepSkipped
	case join.Init && join.ClusterID == "":
		if err := e.init(ctx, s.Swarm); err != nil {
			return shared.StepFailed, err
		}
	default:
		if err := e.join(ctx, s.Swarm, join); err != nil {
			return shared.StepFailed, err
		}
	}
	progress(shared.Progress{Done: 3, Total: stages})

	info, err = e.member(ctx, join, secrets)
	if err != nil {
		return shared.StepFailed, err
	}
	if err := e.report(ctx, join, info, secrets); err != nil {
		return shared.StepFailed, err
	}
	progress(shared.Progress{Done: stages, Total: stages})
	e.log.Info("swarm step done", "status", status, "role", join.Role, "node_id", info.NodeID, "cluster_id", clusterID(info))
	return status, nil
}

// leaveRemovedNode makes an engine that still holds the swarm state of node (removed
// from the swarm by a manager when its machine was re-provisioned in place) leave it, so
// it joins as a new node. An engine that is another node, or none, is left alone: the
// step may run again after it joined.
func (e *Executor) leaveRemovedNode(ctx context.Context, node string) error {
	if node == "" {
		return nil
	}
	info, err := e.docker.Info(ctx)
	if err != nil {
		return dockerErr("reading the node's swarm state", err, nil)
	}
	if info.Swarm.NodeID != node {
		return nil
	}
	e.log.Info("leaving the swarm state of the removed node", "node_id", node, "local_state", info.Swarm.LocalNodeState)
	if err := e.docker.SwarmLeave(ctx, true); err != nil {
		return dockerErr("leaving the swarm state of removed node "+node, err, nil)
	}
	_, err = e.waitInfo(ctx, nil, func(i swarm.Info) bool { return i.LocalNodeState == swarm.LocalNodeStateInactive })
	return err
}

// joinInfo asks the coordinator how to join. While the first manager is still creating
// the swarm the answer is "pending": that is waiting, not failing, so it is asked again
// (for up to PendingWait) without spending one of the step's attempts.
func (e *Executor) joinInfo(ctx context.Context) (*shared.SwarmJoin, error) {
	var join *shared.SwarmJoin
	var last error
	err := poll(ctx, e.cfg.PendingWait, func() (bool, error) {
		join, last = e.cfg.Coordinator.SwarmJoin(ctx, e.cfg.MachineID)
		if shared.CodeOf(last) == shared.CodeSwarmPending {
			return false, nil
		}
		return true, last
	})
	switch {
	case err == nil:
		return join, nil
	case shared.CodeOf(last) == shared.CodeSwarmPending:
		return nil, step.WithHint(fmt.Errorf("the swarm was still not created after %s: %w", e.cfg.PendingWait, last),
			"check the first manager's swarm step (rivet machines ls; its timeline says why it has not finished)")
	}
	return nil, fmt.Errorf("asking the coordinator how to join the swarm: %w", err)
}

// checkJoin refuses join information that cannot be right, before anything is done.
func checkJoin(j *shared.SwarmJoin, plan *shared.SwarmStep) error {
	if j.Role != plan.Role {
		return fmt.Errorf("the coordinator says this node is a swarm %q but the plan says %q; "+
			"the plan probably changed and the next try fetches it", j.Role, plan.Role)
	}
	if j.Role != shared.SwarmManager && j.Role != shared.SwarmWorker {
		return step.Permanent(fmt.Errorf("swarm role %q: want manager or worker", j.Role))
	}
	if j.Init && j.Role != shared.SwarmManager {
		return step.Permanent(errors.New("the coordinator asks a worker to create the swarm: a coordinator bug"))
	}
	if j.Init && !plan.Init {
		return step.Permanent(errors.New("the coordinator asks this node to create the swarm, but its plan does not " +
			"designate it: a coordinator bug"))
	}
	return nil
}

// waitDocker waits until the node's dockerd answers: after the first disk boot the agent
// may well start before docker.service.
func (e *Executor) waitDocker(ctx context.Context) error {
	var last error
	err := poll(ctx, e.cfg.Wait, func() (bool, error) {
		_, last = e.docker.Ping(ctx)
		return last == nil, nil
	})
	if err != nil {
		return step.WithHint(fmt.Errorf("dockerd at %s does not answer: %v", e.docker.DaemonHost(), last),
			"check that docker is installed and running on the node (systemctl status docker)")
	}
	return nil
}

// waitInfo reads the node's swarm state until done says it is what the caller waits
// for, for at most cfg.Wait; it returns the last state read either way.
func (e *Executor) waitInfo(ctx context.Context, secrets []string, done func(swarm.Info) bool) (swarm.Info, error) {
	var info swarm.Info
	err := poll(ctx, e.cfg.Wait, func() (bool, error) {
		i, err := e.docker.Info(ctx)
		if err != nil {
			return false, dockerErr("reading the node's swarm state", err, secrets)
		}
		info = i.Swarm
		return done(info), nil
	})
	return info, err
}

// settled returns the node's swarm state once it is not pending. A pending node is
// joining, or restarted and cannot reach a manager; it gets cfg.Wait to settle.
func (e *Executor) settled(ctx context.Context, secrets []string) (swarm.Info, error) {
	info, err := e.waitInfo(ctx, secrets, func(info swarm.Info) bool {
		return info.LocalNodeState != swarm.LocalNodeStatePending
	})
	switch {
	case err != nil && info.LocalNodeState == swarm.LocalNodeStatePending:
		return info, step.WithHint(fmt.Errorf("node has been joining a swarm (pending) for %s and cannot finish: %s",
			e.cfg.Wait, redact(info.Error, secrets)),
			"check that the node reaches a manager on TCP 2377; to start over run `docker swarm leave --force` on it, then retry the step")
	case err != nil:
		return info, err
	case info.LocalNodeState == swarm.LocalNodeStateLocked:
		return info, step.Permanent(step.WithHint(errors.New("node's swarm is locked (autolock is on)"),
			"unlock it with `docker swarm unlock` and the swarm's unlock key, then retry the step"))
	case info.LocalNodeState == swarm.LocalNodeStateError:
		return info, step.WithHint(fmt.Errorf("dockerd reports a swarm error: %s", redact(info.Error, secrets)),
			"see the dockerd log on the node (journalctl -u docker)")
	}
	return info, nil
}

// poll calls check until it says done, returns an error, ctx ends or wait has passed.
func poll(ctx context.Context, wait time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(wait)
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		done, err := check()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s", wait)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func clusterID(info swarm.Info) string {
	if info.Cluster == nil {
		return ""
	}
	return info.Cluster.ID
}
