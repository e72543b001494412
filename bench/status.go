package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rivetmetal/rivet/coordinator/auth"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/planner"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/coordinator/status"
	"github.com/rivetmetal/rivet/shared"
)

// StatusOptions configures `rivet-bench status`.
type StatusOptions struct {
	Machines int           // fleet size (default 10,000)
	Renders  int           // fleet-page renders timed (default 40)
	Clients  int           // connected event-stream clients (default 100)
	Reports  int           // progress reports applied per second during the stream run (default 5,000)
	Duration time.Duration // length of the stream run (default 10 s)
}

// StatusResult holds the figures.
type StatusResult struct {
	PageP50, PageP95       time.Duration // the default fleet page: every machine's tile
	PageCPU, FailedCPU     time.Duration // process CPU time per render (contention-free)
	FailedP50, FailedP95   time.Duration // the page filtered to failed machines
	PageBytes, FailedBytes int
	ReportsPerSec          float64 // store changes applied during the stream run
	EventsPerSec           float64 // machine updates delivered, summed over clients
	BatchesPerClientPerSec float64
}

// statusGoal is the goal for the fleet page's server time at p95.
const statusGoal = 200 * time.Millisecond

// Status measures the status pages on a store of opts.Machines machines in mixed states:
// the server time to render the fleet page (p50/p95, through the real handler, with the
// store's locking), and the machine updates per second the event stream delivers to
// opts.Clients connected clients while machines report progress. The store is filled
// through its Apply methods, as the FSM fills it; Raft is not part of this measurement.
func Status(ctx context.Context, w io.Writer, opts StatusOptions) (*StatusResult, error) {
	opts = opts.withDefaults()
	store, token, running, err := statusFleet(opts.Machines)
	if err != nil {
		return nil, err
	}
	pages := status.New(status.Config{Backend: readOnly{store}})
	defer pages.Close()
	var res StatusResult
	if res.PageP50, res.PageP95, res.PageCPU, res.PageBytes, err = timeRenders(pages, token, "/status/", opts.Renders); err != nil {
		return nil, err
	}
	if res.FailedP50, res.FailedP95, res.FailedCPU, res.FailedBytes, err = timeRenders(pages, token, "/status/?state=failed", opts.Renders); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "rivet-figure: status fleet page machines=%d all_tiles p50_ms=%.1f p95_ms=%.1f cpu_ms=%.1f bytes=%d goal_p95_ms=%d ratio=%.2f\n",
		opts.Machines, ms(res.PageP50), ms(res.PageP95), ms(res.PageCPU), res.PageBytes, statusGoal.Milliseconds(), float64(res.PageP95)/float64(statusGoal))
	fmt.Fprintf(w, "rivet-figure: status fleet page machines=%d filtered_failed p50_ms=%.1f p95_ms=%.1f cpu_ms=%.1f bytes=%d goal_p95_ms=%d ratio=%.2f\n",
		opts.Machines, ms(res.FailedP50), ms(res.FailedP95), ms(res.FailedCPU), res.FailedBytes, statusGoal.Milliseconds(), float64(res.FailedP95)/float64(statusGoal))
	if err := streamRun(ctx, pages, store, token, running, opts, &res); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "rivet-figure: status event stream machines=%d clients=%d reports_per_s=%.0f delivered_updates_per_s=%.0f batches_per_client_per_s=%.2f\n",
		opts.Machines, opts.Clients, res.ReportsPerSec, res.EventsPerSec, res.BatchesPerClientPerSec)
	return &res, nil
}

func (o StatusOptions) withDefaults() StatusOptions {
	orDefault(&o.Machines, 10000)
	orDefault(&o.Renders, 40)
	orDefault(&o.Clients, 100)
	orDefault(&o.Reports, 5000)
	orDefault(&o.Duration, 10*time.Second)
	return o
}

// readOnly is the store as the pages' backend: the bench never acts.
type readOnly struct{ s *state.Store }

func (r readOnly) Store() *state.Store { return r.s }
func (r readOnly) Apply(context.Context, state.Command) (state.Result, error) {
	return state.Result{}, errors.New("the status bench is read-only")
}
func (r readOnly) Members() shared.Members { return shared.Members{} }

// benchPlan carries the store's Raft index for commands applied outside Raft.
type benchPlan struct {
	store *state.Store
	index uint64
	now   time.Time
}

func (b *benchPlan) next() uint64 { b.index++; return b.index }

// statusFleet fills a store with n machines over 20 racks: a tenth discovered, and the
// rest planned, provisioning (image at some percent), installed, ready or failed. It
// returns the store, an admin token, and the machines left provisioning.
func statusFleet(n int) (*state.Store, string, []shared.MachineID, error) {
	b := &benchPlan{store: state.New(), now: time.Now().UTC()}
	adminRec, admin := auth.NewToken("bench", shared.TokenAdmin, b.now)
	enrolRec, _ := auth.NewToken("enrol", shared.TokenEnrol, b.now)
	b.store.ApplyInitCluster(state.InitCluster{Cluster: state.Cluster{CACertPEM: "bench", TokenSecret: auth.NewSecret(32),
		CreatedAt: b.now}, AdminToken: adminRec, EnrolToken: enrolRec}, b.next())
	role := shared.Role{Name: "bench", Selector: shared.Selector{Labels: map[string]string{"pool": "bench"}},
		InstallDisk: shared.DiskRule{Smallest: &shared.SmallestDisk{MinSizeGB: 100}},
		Image:       shared.ImageSpec{URL: "/v1/images/bench.raw.zst", SHA256: strings.Repeat("0", 64)},
		Swarm:       shared.SwarmSpec{Role: shared.SwarmWorker}}
	b.store.ApplyPutRole(state.PutRole{Role: role, Time: b.now}, b.next())
	var running []shared.MachineID
	for i := 1; i <= n; i++ {
		inv := coordinatortest.FakeInventory(i)
		ident, err := shared.DeriveMachineID(&inv)
		if err != nil {
			return nil, "", nil, err
		}
		_, err = b.store.ApplyRegister(state.Register{ID: ident.ID, Basis: ident.Basis, Inventory: inv, Mode: shared.ModeRAM,
			Version: "bench", Time: b.now, Labels: map[string]string{"pool": "bench", "rack": fmt.Sprintf("r%02d", i%20)}}, b.next())
		if err != nil {
			return nil, "", nil, err
		}
		if i%10 == 0 {
			continue // stays discovered
		}
		m, _ := b.store.Machine(ident.ID)
		plan, err := planner.Plan(m, &role, 1, shared.SwarmWorker)
		if err != nil {
			return nil, "", nil, err
		}
		b.store.ApplySetPlan(state.SetPlan{ID: ident.ID, Role: role.Name, Plan: plan, Time: b.now}, b.next())
		if err := b.advance(ident.ID, plan, i%5); err != nil {
			return nil, "", nil, err
		}
		if i%5 == 1 {
			running = append(running, ident.ID)
		}
	}
	return b.store, admin, running, nil
}

// advance drives one machine: 0 stays planned, 1 provisioning, 2 failed, 3 and 4 done
// with their RAM steps (installed; the bench has no disk boots, so they stay there).
func (b *benchPlan) advance(id shared.MachineID, plan *shared.Plan, kind int) error {
	report := func(step string, st shared.StepStatus, p *shared.Progress, errText string) error {
		_, err := b.store.ApplyReport(state.Report{ID: id, Time: b.now, Report: shared.StepReport{Generation: plan.Generation,
			Step: step, Status: st, Attempt: 1, Progress: p, Error: errText}}, b.next())
		return err
	}
	first, second := plan.Steps[0].Name, plan.Steps[1].Name
	switch kind {
	case 1:
		if err := report(first, shared.StepSucceeded, nil, ""); err != nil {
			return err
		}
		return report(second, shared.StepRunning, &shared.Progress{Done: 1 << 29, Total: 2 << 30, BytesPerSec: 110 << 20}, "")
	case 2:
		return report(first, shared.StepFailed, nil, "wiping /dev/nvme0n1: input/output error")
	case 3, 4:
		for _, st := range plan.Steps {
			if st.Phase == shared.PhaseRAM {
				if err := report(st.Name, shared.StepSucceeded, nil, ""); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// timeRenders renders path n times through the handler and returns p50, p95, the
// process CPU time per render (garbage collection included; on a shared machine it shows
// the work without the wait) and the size.
func timeRenders(h http.Handler, token, path string, n int) (p50, p95, cpu time.Duration, size int, err error) {
	times := make([]time.Duration, 0, n)
	cpuStart := processCPU()
	for i := 0; i < n; i++ {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, req)
		times = append(times, time.Since(start))
		if rec.Code != http.StatusOK {
			return 0, 0, 0, 0, fmt.Errorf("GET %s: HTTP %d: %s", path, rec.Code, rec.Body.String())
		}
		size = rec.Body.Len()
	}
	cpu = (processCPU() - cpuStart) / time.Duration(n)
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	return times[len(times)/2], times[len(times)*95/100], cpu, size, nil
}

// streamRun connects the clients, applies progress reports at opts.Reports per second
// to the provisioning machines for opts.Duration, and counts what the clients receive.
func streamRun(ctx context.Context, pages http.Handler, store *state.Store, token string, running []shared.MachineID,
	opts StatusOptions, res *StatusResult) error {
	srv := httptest.NewServer(pages)
	defer srv.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var updates, batches atomic.Int64
	var wg sync.WaitGroup
	connected := make(chan error, opts.Clients)
	for c := 0; c < opts.Clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			connected <- readStream(ctx, srv.URL, token, &updates, &batches)
		}()
	}
	for c := 0; c < opts.Clients; c++ {
		if err := <-connected; err != nil {
			return err
		}
	}
	idx := store.Applied()
	gens := map[shared.MachineID]uint64{}
	for _, id := range running {
		m, _ := store.Machine(id)
		gens[id] = m.Plan.Generation
	}
	start := time.Now()
	updates.Store(0)
	batches.Store(0)
	applied := 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	perTick := max(opts.Reports/100, 1)
	for time.Since(start) < opts.Duration && ctx.Err() == nil {
		<-tick.C
		for k := 0; k < perTick; k++ {
			id := running[rand.IntN(len(running))]
			idx++
			m, _ := store.Machine(id)
			step := m.Plan.Steps[1].Name
			done := rand.Int64N(2 << 30)
			_, err := store.ApplyReport(state.Report{ID: id, Time: time.Now().UTC(), Report: shared.StepReport{Generation: gens[id],
				Step: step, Status: shared.StepRunning, Attempt: 1,
				Progress: &shared.Progress{Done: done, Total: 2 << 30, BytesPerSec: 100 << 20}}}, idx)
			if err != nil {
				return err
			}
			applied++
		}
	}
	// Let the last batch arrive, then stop counting.
	time.Sleep(1500 * time.Millisecond)
	elapsed := time.Since(start).Seconds()
	res.ReportsPerSec = float64(applied) / opts.Duration.Seconds()
	res.EventsPerSec = float64(updates.Load()) / elapsed
	res.BatchesPerClientPerSec = float64(batches.Load()) / float64(opts.Clients) / elapsed
	cancel()
	wg.Wait()
	return nil
}

// readStream connects one client to the event stream and counts, in the background,
// its batches and machine updates; it returns once connected.
func readStream(ctx context.Context, base, token string, updates, batches *atomic.Int64) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/status/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return fmt.Errorf("event stream: HTTP %d", resp.StatusCode)
	}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			// Counting, not decoding: a hundred decoders would measure the clients.
			batches.Add(1)
			updates.Add(int64(strings.Count(data, `{"id":`)))
		}
	}()
	return nil
}
