package swarm

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/swarm"
)

// A plain `docker node update --availability drain` stops the node's tasks before their
// replacements run elsewhere: every replicated service on it blips (docker/docs #9917),
// and Swarm has no wait-for-drain (moby/moby #33220). Rivet's drain is a surge:
//
//  1. pause the node: no new task lands on it, its tasks keep running;
//  2. give each replicated service one replica more per task it runs on the node, and
//     wait until all of them run (on other nodes, since this one is paused);
//  3. drain the node and wait until nothing runs on it and every service runs what it
//     wants;
//  4. take the extra replicas back.
//
// The surge is recorded on the service (a label per node), so a drain run again after
// a crash or a lost report neither surges twice nor forgets to scale back. A global
// service loses the node's task by nature: the node is going away.

// surgeLabel is the service label that records a surge for node.
func surgeLabel(node string) string { return "io.rivetmetal.surge." + node }

// drain empties a node without a replicated service ever running fewer tasks than it
// wants, and says what it did.
func (e *Executor) drain(ctx context.Context, nodeID string) (string, error) {
	if err := e.setAvailability(ctx, nodeID, swarm.NodeAvailabilityPause); err != nil {
		return "", err
	}
	surged, err := e.surge(ctx, nodeID)
	if err != nil {
		return "", err
	}
	if err := e.waitServices(ctx, nodeID, false); err != nil {
		return "", fmt.Errorf("waiting for the extra replicas to run elsewhere: %w", err)
	}
	if err := e.setAvailability(ctx, nodeID, swarm.NodeAvailabilityDrain); err != nil {
		return "", err
	}
	if err := e.waitServices(ctx, nodeID, true); err != nil {
		return "", fmt.Errorf("waiting for node %s to drain: %w", nodeID, err)
	}
	if err := e.unsurge(ctx, nodeID); err != nil {
		return "", err
	}
	return fmt.Sprintf("drained with a surge of %d replicas over %d services; no task runs on it", surged.tasks, surged.services), nil
}

func (e *Executor) setAvailability(ctx context.Context, nodeID string, want swarm.NodeAvailability) error {
	node, _, err := e.docker.NodeInspectWithRaw(ctx, nodeID)
	if err != nil {
		return dockerErr("reading node "+nodeID, err, nil)
	}
	if node.Spec.Availability == want || node.Spec.Availability == swarm.NodeAvailabilityDrain {
		return nil // drain is as far as it goes: a drain run again does not pause a drained node
	}
	spec := node.Spec
	spec.Availability = want
	if err := e.docker.NodeUpdate(ctx, nodeID, node.Version, spec); err != nil {
		return dockerErr(fmt.Sprintf("setting node %s to %s", nodeID, want), err, nil)
	}
	return nil
}

type surgeCount struct{ services, tasks int }

// surge adds, to each replicated service, one replica per task it runs on node.
func (e *Executor) surge(ctx context.Context, nodeID string) (surgeCount, error) {
	var done surgeCount
	onNode, err := e.tasksOn(ctx, nodeID)
	if err != nil {
		return done, err
	}
	for serviceID, n := range onNode {
		svc, _, err := e.docker.ServiceInspectWithRaw(ctx, serviceID, swarm.ServiceInspectOptions{})
		if err != nil {
			return done, dockerErr("reading service "+serviceID, err, nil)
		}
		r := svc.Spec.Mode.Replicated
		if r == nil || r.Replicas == nil {
			continue // global: its task on this node goes with the node
		}
		if _, already := svc.Spec.Labels[surgeLabel(nodeID)]; already {
			done.services++
			continue
		}
		spec := svc.Spec
		replicas := *r.Replicas + uint64(n)
		spec.Mode.Replicated = &swarm.ReplicatedService{Replicas: &replicas}
		spec.Labels = cloneLabels(spec.Labels)
		spec.Labels[surgeLabel(nodeID)] = strconv.Itoa(n)
		if _, err := e.docker.ServiceUpdate(ctx, svc.ID, svc.Version, spec, swarm.ServiceUpdateOptions{}); err != nil {
			return done, dockerErr("adding replicas to service "+svc.Spec.Name, err, nil)
		}
		e.log.Info("drain: service surged", "service", svc.Spec.Name, "node", nodeID, "replicas", replicas)
		done.services++
		done.tasks += n
	}
	return done, nil
}

// unsurge takes back the replicas surge added for node.
func (e *Executor) unsurge(ctx context.Context, nodeID string) error {
	services, err := e.docker.ServiceList(ctx, swarm.ServiceListOptions{Filters: filters.NewArgs(filters.Arg("label", surgeLabel(nodeID)))})
	if err != nil {
		return dockerErr("listing the surged services", err, nil)
	}
	for _, svc := range services {
		n, err := strconv.Atoi(svc.Spec.Labels[surgeLabel(nodeID)])
		r := svc.Spec.Mode.Replicated
		if err != nil || r == nil || r.Replicas == nil {
			continue
		}
		spec := svc.Spec
		replicas := *r.Replicas - min(uint64(max(n, 0)), *r.Replicas)
		spec.Mode.Replicated = &swarm.ReplicatedService{Replicas: &replicas}
		spec.Labels = cloneLabels(spec.Labels)
		delete(spec.Labels, surgeLabel(nodeID))
		if _, err := e.docker.ServiceUpdate(ctx, svc.ID, svc.Version, spec, swarm.ServiceUpdateOptions{}); err != nil {
			return dockerErr("taking the extra replicas back from service "+svc.Spec.Name, err, nil)
		}
	}
	return nil
}

// waitServices waits until every service runs the tasks it wants and, if empty is set,
// no task runs on node.
func (e *Executor) waitServices(ctx context.Context, nodeID string, empty bool) error {
	var onNode int
	var behind []string
	err := poll(ctx, e.cfg.Wait, func() (bool, error) {
		tasks, err := e.tasksOn(ctx, nodeID)
		if err != nil {
			return false, err
		}
		onNode = 0
		for _, n := range tasks {
			onNode += n
		}
		if behind, err = e.servicesBehind(ctx); err != nil {
			return false, err
		}
		return len(behind) == 0 && (!empty || onNode == 0), nil
	})
	if err != nil {
		return fmt.Errorf("%d tasks on the node, services short of their tasks: %s: %w", onNode, namesOrNone(behind), err)
	}
	return nil
}

// tasksOn counts, by service, the tasks the swarm wants running, or still runs, on node.
func (e *Executor) tasksOn(ctx context.Context, nodeID string) (map[string]int, error) {
	tasks, err := e.docker.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("node", nodeID))})
	if err != nil {
		return nil, dockerErr("listing the tasks of node "+nodeID, err, nil)
	}
	out := map[string]int{}
	for _, t := range tasks {
		if t.DesiredState == swarm.TaskStateRunning || t.Status.State == swarm.TaskStateRunning {
			out[t.ServiceID]++
		}
	}
	return out, nil
}

// servicesBehind names the services that run fewer tasks than they want.
func (e *Executor) servicesBehind(ctx context.Context) ([]string, error) {
	services, err := e.docker.ServiceList(ctx, swarm.ServiceListOptions{Status: true})
	if err != nil {
		return nil, dockerErr("listing services", err, nil)
	}
	var behind []string
	for _, s := range services {
		if st := s.ServiceStatus; st != nil && st.RunningTasks < st.DesiredTasks {
			behind = append(behind, fmt.Sprintf("%s %d/%d", s.Spec.Name, st.RunningTasks, st.DesiredTasks))
		}
	}
	return behind, nil
}

// cloneLabels copies a service's labels to change them (ServiceInspect's are nil when
// it has none).
func cloneLabels(l map[string]string) map[string]string {
	if l == nil {
		return map[string]string{}
	}
	return maps.Clone(l)
}

func namesOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
