package fleetsim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/agent/step/bootcfg"
	"github.com/rivetmetal/rivet/internal/ctxtime"
	"github.com/rivetmetal/rivet/shared"
)

// Durations are how long the simulated steps take; each machine draws its own around
// them (± Jitter), so a fleet does not move in lockstep.
type Durations struct {
	Disk   time.Duration // wipe + GPT
	Image  time.Duration // stream and write the OS image
	Reboot time.Duration // firmware POST to the installed OS's agent
	Swarm  time.Duration // docker swarm join
	Jitter float64       // fraction, 0..1
}

// DefaultDurations are a fast server's: seconds for the disk, a 2 GiB image at ~100 MB/s,
// a server's POST, a swarm join.
func DefaultDurations() Durations {
	return Durations{Disk: 3 * time.Second, Image: 20 * time.Second, Reboot: 30 * time.Second,
		Swarm: 3 * time.Second, Jitter: 0.3}
}

// Scaled returns d with every duration multiplied by f (f < 1 makes a quicker run).
func (d Durations) Scaled(f float64) Durations {
	sc := func(x time.Duration) time.Duration { return time.Duration(float64(x) * f) }
	return Durations{Disk: sc(d.Disk), Image: sc(d.Image), Reboot: sc(d.Reboot), Swarm: sc(d.Swarm), Jitter: d.Jitter}
}

func (d Durations) draw(r *rand.Rand, x time.Duration) time.Duration {
	return time.Duration(float64(x) * (1 + d.Jitter*(2*r.Float64()-1)))
}

// simImageBytes is the simulated image size: progress reports carry bytes as the real
// image step does.
const simImageBytes = 2 << 30

// work sleeps for d, calling progress with total units spread over the time, as a real
// executor reports while it writes. It returns ctx's error if ctx ends first.
func work(ctx context.Context, d time.Duration, total int64, progress func(shared.Progress)) error {
	const tick = 250 * time.Millisecond
	start := time.Now()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		elapsed := time.Since(start)
		if elapsed >= d {
			progress(shared.Progress{Done: total, Total: total})
			return nil
		}
		progress(shared.Progress{Done: int64(float64(total) * float64(elapsed) / float64(d)), Total: total})
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// executors are the simulated step executors of machine m. bootcfg is the agent's real
// executor (it is one API call); the rest sleep with progress instead of touching disks
// or dockerd.
func (m *Machine) executors() map[shared.StepKind]step.Executor {
	r := rand.New(rand.NewPCG(uint64(m.Index), 7))
	d := m.fleet.cfg.Durations
	timed := func(kind shared.StepKind, dur time.Duration, total int64) step.Executor {
		return step.ExecutorFunc(func(ctx context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error) {
			if kind == shared.StepImage {
				m.fleet.stats.milestone(MilestoneImaging)
			}
			if err := work(ctx, d.draw(r, dur), total, progress); err != nil {
				return shared.StepFailed, err
			}
			return shared.StepSucceeded, nil
		})
	}
	return map[shared.StepKind]step.Executor{
		shared.StepDisk:    timed(shared.StepDisk, d.Disk, 3),
		shared.StepImage:   timed(shared.StepImage, d.Image, simImageBytes),
		shared.StepBootCfg: &bootcfg.Executor{ID: m.ID, Booter: timedBooter{m}},
		shared.StepReboot: step.ExecutorFunc(func(context.Context, shared.Step, func(shared.Progress)) (shared.StepStatus, error) {
			// As the real reboot step: succeed first, restart a moment later (RunPhase returns).
			m.rebootDue = true
			return shared.StepSucceeded, nil
		}),
		shared.StepSwarm: step.ExecutorFunc(func(ctx context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error) {
			return m.swarmStep(ctx, s, d.draw(r, d.Swarm), progress)
		}),
	}
}

// genericStep simulates a step of a kind this simulator does not know: as long as the
// disk step, with progress.
func (m *Machine) genericStep() step.Executor {
	r := rand.New(rand.NewPCG(uint64(m.Index), 17))
	d := m.fleet.cfg.Durations
	return step.ExecutorFunc(func(ctx context.Context, _ shared.Step, progress func(shared.Progress)) (shared.StepStatus, error) {
		if err := work(ctx, d.draw(r, d.Disk), 1, progress); err != nil {
			return shared.StepFailed, err
		}
		return shared.StepSucceeded, nil
	})
}

// timedBooter is the machine's client as bootcfg.Booter, with the call timed.
type timedBooter struct{ m *Machine }

func (b timedBooter) SetBoot(ctx context.Context, id shared.MachineID, t shared.BootTarget) error {
	start := time.Now()
	err := b.m.client.SetBoot(ctx, id, t)
	b.m.fleet.stats.record("setboot", time.Since(start), err, true)
	return err
}

// swarmStep does what the real swarm step does with the coordinator (fetch the join
// information, report the node and, from the first manager, the tokens) and sleeps where
// dockerd would work. One difference, on purpose: "the swarm does not exist yet" is
// waited out here, where the real executor counts it as a failed attempt (see the
// bench's report: at fleet scale a worker can reach its swarm step before the first
// manager and fail for good after three tries).
func (m *Machine) swarmStep(ctx context.Context, s shared.Step, dur time.Duration, progress func(shared.Progress)) (shared.StepStatus, error) {
	progress(shared.Progress{Done: 0, Total: 4})
	var join *shared.SwarmJoin
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		start := time.Now()
		j, err := m.client.SwarmJoin(ctx, m.ID)
		m.fleet.stats.record("swarm_join", time.Since(start), err, false)
		if err == nil {
			join = j
			break
		}
		if shared.StatusOf(err) != http.StatusConflict {
			return shared.StepFailed, fmt.Errorf("asking the coordinator how to join the swarm: %w", err)
		}
		m.fleet.stats.swarmWait()
		if err := ctxtime.Sleep(ctx, wait); err != nil {
			return shared.StepFailed, err
		}
	}
	if join.Role != s.Swarm.Role {
		return shared.StepFailed, fmt.Errorf("coordinator says swarm %q, plan says %q", join.Role, s.Swarm.Role)
	}
	progress(shared.Progress{Done: 1, Total: 4})
	if err := work(ctx, dur, 3, func(p shared.Progress) { progress(shared.Progress{Done: 1 + p.Done, Total: 4}) }); err != nil {
		return shared.StepFailed, err
	}
	rep := &shared.SwarmReport{NodeID: fmt.Sprintf("simnode%06d", m.Index), ClusterID: join.ClusterID}
	if join.Role == shared.SwarmManager {
		rep.Addr = m.ip() + ":2377"
	}
	if join.Init {
		rep.ClusterID = "simswarm" + string(m.ID)[:8]
		rep.ManagerToken, rep.WorkerToken = "SWMTKN-1-sim-manager", "SWMTKN-1-sim-worker"
	}
	start := time.Now()
	_, err := m.client.SwarmReport(ctx, m.ID, rep)
	m.fleet.stats.record("swarm_report", time.Since(start), err, true)
	if err != nil {
		return shared.StepFailed, fmt.Errorf("reporting the swarm node: %w", err)
	}
	return shared.StepSucceeded, nil
}
