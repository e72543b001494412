package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestSwarmOpsAttackerWithAMachineToken: a pending removal names the swarm's creator as
// its runner. The attacker holds another manager's machine token and tries to read the
// runner's operations, to report the operation done (with join tokens of its choosing)
// on either path, and to send malformed reports. Every attempt is refused and changes
// nothing; the runner's own report then replaces the tokens, which no log shows.
func TestSwarmOpsAttackerWithAMachineToken(t *testing.T) {
	site := newSwarmSite(t)
	ctx := context.Background()
	store := site.f.c.Server.Store()
	testenv.Eventually(t, 30*time.Second, "the solo coordinator at protocol 2", func() error {
		if p := store.Protocol(); p < 2 {
			return fmt.Errorf("protocol %d", p)
		}
		return nil
	})
	runner := site.initiator
	var target shared.MachineID
	for _, id := range site.victims {
		if id != runner {
			target = id
			break
		}
	}
	site.joinReady(t, runner, shared.SwarmReport{NodeID: "n-runner", ClusterID: "c-site", Addr: site.addrs[runner] + ":2377",
		ManagerToken: "SWMTKN-1-manager-before-0123456789", WorkerToken: "SWMTKN-1-worker-before-0123456789"})
	site.joinReady(t, target, shared.SwarmReport{NodeID: "n-target", ClusterID: "c-site", Addr: site.addrs[target] + ":2377"})
	if _, err := site.f.c.Client(site.f.c.AdminToken).Action(ctx, target, shared.ActionRetire, "test"); err != nil {
		t.Fatal(err)
	}
	res, err := site.f.c.Server.Apply(ctx, state.SwarmOpStart{Time: time.Now().UTC(), Op: shared.SwarmOp{
		Kind: shared.SwarmOpRemove, Target: target, NodeID: "n-target", Runner: runner, Reason: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	opPath := func(id shared.MachineID, op string) string {
		return shared.MachinePath(shared.PathMachineSwarmOps, id) + "/" + op
	}
	atk := site.tokens[site.attacker]
	forged := []byte(`{"ok":true,"detail":"x","manager_token":"SWMTKN-1-evil-manager","worker_token":"SWMTKN-1-evil-worker"}`)
	site.refused(t, "reading the runner's operations", http.StatusForbidden, http.MethodGet,
		shared.MachinePath(shared.PathMachineSwarmOps, runner), atk, nil)
	site.refused(t, "reporting the runner's operation on the runner's path", http.StatusForbidden, http.MethodPost,
		opPath(runner, res.Value), atk, forged)
	site.refused(t, "reporting the runner's operation on its own path", http.StatusForbidden, http.MethodPost,
		opPath(site.attacker, res.Value), atk, forged)
	site.refused(t, "an operation id that is no number", http.StatusBadRequest, http.MethodPost,
		opPath(site.attacker, "1;rm"), atk, forged)
	site.refused(t, "ok with an error", http.StatusBadRequest, http.MethodPost,
		opPath(site.attacker, res.Value), atk, []byte(`{"ok":true,"error":"x"}`))
	site.refused(t, "re-provisioning the runner with a machine token", http.StatusForbidden, http.MethodPost,
		shared.MachinePath(shared.PathMachineReprovision, runner), atk, []byte(`{"reason":"x"}`))
	site.refused(t, "re-provisioning itself with its own machine token", http.StatusForbidden, http.MethodPost,
		shared.MachinePath(shared.PathMachineReprovision, site.attacker), atk, []byte(`{}`))
	site.refused(t, "a kexec boot (with its ticket) for the runner", http.StatusForbidden, http.MethodPost,
		shared.MachinePath(shared.PathMachineKexec, runner), atk, nil)
	site.refused(t, "a kexec boot for itself while it is not re-imaged", http.StatusConflict, http.MethodPost,
		shared.MachinePath(shared.PathMachineKexec, site.attacker), atk, nil)
	if ops, err := site.client(site.attacker).SwarmOps(ctx, site.attacker); err != nil || len(ops.Ops) != 0 {
		t.Fatalf("the attacker's own list: %+v, %v; want none", ops, err)
	}

	mine, err := site.client(runner).SwarmOps(ctx, runner)
	if err != nil || len(mine.Ops) != 1 || mine.Ops[0].Target != target {
		t.Fatalf("the runner's list: %+v, %v", mine, err)
	}
	const newWorker = "SWMTKN-1-worker-after-rotation-0123456789"
	if err := site.client(runner).SwarmOpDone(ctx, runner, mine.Ops[0].ID, &shared.SwarmOpReport{OK: true, Detail: "removed",
		ManagerToken: "SWMTKN-1-manager-after-rotation-0123456789", WorkerToken: newWorker}); err != nil {
		t.Fatal(err)
	}
	if sw := store.Swarm(); sw.WorkerToken != newWorker || len(sw.Ops) != 0 {
		t.Fatalf("after the runner's report: worker token %q, ops %v", sw.WorkerToken, sw.Ops)
	}
	if m, _ := store.Machine(target); m.SwarmNodeID != "" {
		t.Fatalf("the removed node is still recorded: %q", m.SwarmNodeID)
	}
	if logs := site.f.logs.String(); strings.Contains(logs, "SWMTKN-") {
		t.Fatal("a join token reached the coordinator's log")
	}
}

// joinReady runs machine id's swarm step as its agent would, up to ready, with report r.
func (s *swarmSite) joinReady(t *testing.T, id shared.MachineID, r shared.SwarmReport) {
	t.Helper()
	ctx := context.Background()
	s.running(t, id, 1)
	if _, err := s.client(id).SwarmJoin(ctx, id); err != nil {
		t.Fatalf("%s: swarm join: %v", id, err)
	}
	if _, err := s.client(id).SwarmReport(ctx, id, &r); err != nil {
		t.Fatalf("%s: swarm report: %v", id, err)
	}
	m, err := s.f.c.Client(s.f.c.AdminToken).Machine(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.client(id).Report(ctx, id, &shared.StepReport{Generation: m.Plan.Generation, Step: "swarm",
		Status: shared.StepSucceeded, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
}
