// Package statustest drives simulated machines through a real coordinator's API, so the
// status pages, `rivet machines watch` and their tests see a fleet in every state. Each
// machine registers with the enrolment token and speaks with its own machine token, as an
// agent would; operators act with the admin token.
package statustest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/shared"
)

// RoleName is the role the simulated fleet's "pool=sim" machines match.
const RoleName = "sim-node"

// Machine is one simulated machine.
type Machine struct {
	Index  int
	ID     shared.MachineID
	Token  string
	Client *shared.Client // carries the machine token
}

// Fleet is a set of simulated machines on one coordinator.
type Fleet struct {
	C        *coordinatortest.InProcess
	Admin    *shared.Client
	Machines []*Machine
}

// Role matches machines labelled pool=sim and installs onto their NVMe disk.
func Role() shared.Role {
	return shared.Role{Name: RoleName, Selector: shared.Selector{Labels: map[string]string{"pool": "sim"}},
		InstallDisk: shared.DiskRule{Smallest: &shared.SmallestDisk{Type: "nvme", MinSizeGB: 100}},
		Image:       shared.ImageSpec{URL: "/v1/images/sim.raw.zst", SHA256: fmt.Sprintf("%064d", 0)},
		Swarm:       shared.SwarmSpec{Role: shared.SwarmWorker}}
}

// Register enrols n machines (numbered from first) with the labels labels(i) gives, a
// few at a time.
func Register(ctx context.Context, c *coordinatortest.InProcess, first, n int, labels func(i int) map[string]string) (*Fleet, error) {
	f := &Fleet{C: c, Admin: c.Client(c.AdminToken), Machines: make([]*Machine, n)}
	// The labels are the operator's: imported as expected machines before they register.
	var expected shared.ImportRequest
	for k := range n {
		expected.Machines = append(expected.Machines, coordinatortest.Expected(first+k, labels(first+k)))
	}
	if _, err := f.Admin.ImportExpected(ctx, &expected); err != nil {
		return nil, fmt.Errorf("importing the simulated machines: %w", err)
	}
	enrol := c.Client(c.EnrolToken)
	err := parallel(n, 16, func(k int) error {
		req := coordinatortest.RegisterRequest(first + k)
		res, err := enrol.Register(ctx, req)
		if err != nil {
			return fmt.Errorf("registering machine %d: %w", first+k, err)
		}
		f.Machines[k] = &Machine{Index: first + k, ID: res.Machine.ID, Token: res.MachineToken,
			Client: c.Client(res.MachineToken)}
		return nil
	})
	return f, err
}

// ApplyRole stores the simulated role.
func (f *Fleet) ApplyRole(ctx context.Context) error {
	_, err := f.Admin.ApplyRoles(ctx, &shared.RoleList{Roles: []shared.Role{Role()}}, false)
	return err
}

// WaitPlanned waits until every machine in ms has left discovered.
func (f *Fleet) WaitPlanned(ctx context.Context, ms []*Machine, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		left := 0
		for _, m := range ms {
			got, err := f.Admin.Machine(ctx, m.ID)
			if err != nil {
				return err
			}
			if got.State == shared.StateDiscovered {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d machines still not planned after %s", left, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Report sends one step report for m against its current plan.
func (m *Machine) Report(ctx context.Context, step string, status shared.StepStatus, progress *shared.Progress, errText string) error {
	plan, err := m.Client.Plan(ctx, m.ID)
	if err != nil {
		return err
	}
	if plan.Plan == nil {
		return fmt.Errorf("machine %s has no plan", m.ID)
	}
	r := &shared.StepReport{Generation: plan.Plan.Generation, Step: step, Status: status, Attempt: 1,
		Progress: progress, Error: errText}
	if status == shared.StepFailed {
		r.Hint = "check the disk's cabling, then retry"
	}
	return m.Client.Report(ctx, m.ID, r)
}

func (m *Machine) plan(ctx context.Context) (*shared.Plan, error) {
	view, err := m.Client.Plan(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	if view.Plan == nil || len(view.Plan.Steps) < 2 {
		return nil, fmt.Errorf("machine %s has no plan with RAM steps", m.ID)
	}
	return view.Plan, nil
}

// Provisioning moves a planned machine into provisioning: its first step done, the
// second (the image, in Rivet's plans) at pct percent.
func (m *Machine) Provisioning(ctx context.Context, pct int) error {
	p, err := m.plan(ctx)
	if err != nil {
		return err
	}
	if err := m.Report(ctx, p.Steps[0].Name, shared.StepSucceeded, nil, ""); err != nil {
		return err
	}
	const total = 2 << 30
	return m.Report(ctx, p.Steps[1].Name, shared.StepRunning,
		&shared.Progress{Done: total / 100 * int64(pct), Total: total, BytesPerSec: 110 << 20}, "")
}

// Fail makes a planned machine's first step fail.
func (m *Machine) Fail(ctx context.Context) error {
	p, err := m.plan(ctx)
	if err != nil {
		return err
	}
	if err := m.Report(ctx, p.Steps[0].Name, shared.StepRunning, nil, ""); err != nil {
		return err
	}
	return m.Report(ctx, p.Steps[0].Name, shared.StepFailed, nil, "wiping /dev/nvme0n1: input/output error")
}

// Install runs the RAM-phase steps and checks in from the "installed OS": the machine is
// installed. With disk set it also starts the disk-phase steps (joining) and, with done,
// finishes them (ready).
func (m *Machine) Install(ctx context.Context, disk, done bool) error {
	p, err := m.plan(ctx)
	if err != nil {
		return err
	}
	var later []string
	for _, st := range p.Steps {
		if st.Phase != shared.PhaseRAM {
			later = append(later, st.Name)
			continue
		}
		if err := m.Report(ctx, st.Name, shared.StepSucceeded, nil, ""); err != nil {
			return err
		}
	}
	if _, err := m.Client.Checkin(ctx, m.ID, &shared.CheckinRequest{Mode: shared.ModeService, Version: "sim"}); err != nil {
		return err
	}
	if !disk {
		return nil
	}
	for i, name := range later {
		if err := m.Report(ctx, name, shared.StepRunning, nil, ""); err != nil {
			return err
		}
		if !done && i == len(later)-1 {
			return nil
		}
		if err := m.Report(ctx, name, shared.StepSucceeded, nil, ""); err != nil {
			return err
		}
	}
	return nil
}

// Mixed builds the fleet the status tests look at: n machines over four racks, of which
// a tenth match no role and the rest are driven into planned, provisioning, failed,
// installed, joining, ready and retired.
func Mixed(ctx context.Context, c *coordinatortest.InProcess, n int) (*Fleet, error) {
	f, err := Register(ctx, c, 1, n, func(i int) map[string]string {
		pool := "sim"
		if i%10 == 0 {
			pool = "none"
		}
		return map[string]string{"pool": pool, "rack": fmt.Sprintf("r%d", i%4+1)}
	})
	if err != nil {
		return nil, err
	}
	var planned []*Machine
	for _, m := range f.Machines {
		if m.Index%10 != 0 {
			planned = append(planned, m)
		}
	}
	if err := f.ApplyRole(ctx); err != nil {
		return nil, err
	}
	if err := f.WaitPlanned(ctx, planned, 60*time.Second); err != nil {
		return nil, err
	}
	err = parallel(len(planned), 16, func(k int) error {
		m := planned[k]
		switch k % 9 {
		case 0, 1:
			return m.Provisioning(ctx, 5+k%90)
		case 2:
			return m.Fail(ctx)
		case 3:
			return m.Install(ctx, false, false)
		case 4:
			return m.Install(ctx, true, false)
		case 5, 6:
			return m.Install(ctx, true, true)
		case 7:
			_, err := f.Admin.Action(ctx, m.ID, shared.ActionRetire, "sim: broken PSU")
			return err
		}
		return nil // stays planned
	})
	return f, err
}

func parallel(n, workers int, fn func(k int) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				if err := fn(k); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for k := 0; k < n; k++ {
		next <- k
	}
	close(next)
	wg.Wait()
	return firstErr
}
