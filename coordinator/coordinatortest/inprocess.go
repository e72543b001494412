package coordinatortest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// InProcess is a single coordinator running inside the test process: the real server,
// Raft, store and HTTPS API, on a free loopback port.
type InProcess struct {
	Server      *coordinator.Server
	URL         string
	Fingerprint string
	AdminToken  string
	EnrolToken  string
	stop        context.CancelFunc
	done        chan error
}

// StartInProcess starts a coordinator with its data in dir, logging to logger. dc may
// preset DaemonConfig fields (planner, extra handlers); addresses are chosen here.
func StartInProcess(ctx context.Context, dir string, logger *slog.Logger, dc coordinator.DaemonConfig) (*InProcess, error) {
	ports, err := FreePorts("127.0.0.1", 2)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &InProcess{stop: cancel, done: make(chan error, 1), URL: fmt.Sprintf("https://127.0.0.1:%d", ports[0])}
	ready := make(chan *coordinator.Server, 1)
	dc.Server.DataDir, dc.Server.NodeID, dc.Server.Logger = dir, "solo", logger
	dc.Server.RaftAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])
	dc.Server.FastElections = true
	if dc.Admission.Policy == "" {
		// Tests of everything but admission want machines planned; admission tests ask
		// for shared.AdmitExpected.
		dc.Admission.Policy = shared.AdmitAuto
	}
	if dc.GossipAddr == "" {
		dc.GossipAddr = "127.0.0.1:0"
	}
	dc.APIAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	dc.Started = func(s *coordinator.Server) { ready <- s }
	go func() { p.done <- coordinator.RunDaemon(ctx, dc) }()
	select {
	case p.Server = <-ready:
	case err := <-p.done:
		cancel()
		return nil, fmt.Errorf("coordinator stopped: %w", err)
	case <-time.After(30 * time.Second):
		cancel()
		return nil, errors.New("coordinator did not start within 30s")
	}
	if err := p.Server.WaitReady(ctx); err != nil {
		p.Stop()
		return nil, err
	}
	creds, err := waitCredentials(ctx, filepath.Join(dir, "operator.env"), 10*time.Second)
	if err != nil {
		p.Stop()
		return nil, err
	}
	p.Fingerprint, p.AdminToken, p.EnrolToken = creds.CAFingerprint, creds.Token, creds.EnrolToken
	return p, nil
}

// waitCredentials waits up to within for the coordinator to write its operator.env with
// the CA fingerprint, the admin token and the enrolment token.
func waitCredentials(ctx context.Context, path string, within time.Duration) (shared.OperatorCredentials, error) {
	var creds shared.OperatorCredentials
	err := testenv.Poll(ctx, within, path+" with the CA fingerprint and both tokens", func() error {
		var err error
		creds, err = shared.ReadOperatorCredentials(path)
		return err
	})
	return creds, err
}

// WriteCredentials writes an operator.env for this coordinator to path, as the CLI's
// --env-file reads it.
func (p *InProcess) WriteCredentials(path string) error {
	return shared.WriteOperatorCredentials(path, shared.OperatorCredentials{Servers: []string{p.URL},
		CAFingerprint: p.Fingerprint, Token: p.AdminToken, EnrolToken: p.EnrolToken})
}

// Client returns a client for the coordinator carrying token.
func (p *InProcess) Client(token string) *shared.Client {
	c, err := shared.NewClient(shared.ClientConfig{URLs: []string{p.URL}, CAFingerprint: p.Fingerprint, Token: token})
	if err != nil {
		panic(err)
	}
	return c
}

// Stop shuts the coordinator down and waits for it.
func (p *InProcess) Stop() {
	p.stop()
	<-p.done
}

// PlantSwarm puts a swarm with these join tokens into this coordinator's store, for
// tests that look for secrets in pages and streams. The swarm's own API hands tokens
// only to machines whose swarm step is due, so a test that just needs them present
// sets them here. It rewrites this coordinator's copy only (not the Raft log): use it
// on a single in-process coordinator.
func (p *InProcess) PlantSwarm(clusterID, managerToken, workerToken string) error {
	store := p.Server.Store()
	snap := store.Snapshot()
	var buf bytes.Buffer
	if err := snap.Encode(&buf); err != nil {
		return err
	}
	var d state.Data
	if err := json.Unmarshal(buf.Bytes(), &d); err != nil {
		return err
	}
	d.Swarm.ClusterID, d.Swarm.ManagerToken, d.Swarm.WorkerToken = clusterID, managerToken, workerToken
	store.Restore(&d, snap.Applied)
	return nil
}
