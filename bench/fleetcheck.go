package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rivetmetal/rivet/bench/fleetsim"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/fsm"
	"github.com/rivetmetal/rivet/coordinator/state"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// check compares what the fleet was told with what every coordinator records: one
// digest everywhere, every machine listed once and ready, every acknowledged step
// result on record.
func (h *fleetRun) check(ctx context.Context) FleetCheck {
	var c FleetCheck
	var ds []shared.Digest
	err := testenv.Poll(ctx, 90*time.Second, "equal digests on every coordinator", func() error {
		ds = ds[:0]
		for _, n := range h.cluster.Nodes {
			d, err := h.cluster.Client(n).Digest(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", n.ID, err)
			}
			ds = append(ds, *d)
		}
		for _, d := range ds[1:] {
			if d != ds[0] {
				return fmt.Errorf("digests differ: %v", ds)
			}
		}
		return nil
	})
	c.DigestsEqual = err == nil
	if len(ds) > 0 {
		c.Digest = ds[0]
	}
	if err != nil {
		h.logf("check: %v", err)
	}
	probe := probeID()
	for i, n := range h.cluster.Nodes {
		ms, err := h.cluster.Client(n).Machines(ctx)
		if err != nil {
			h.logf("check: listing machines on %s: %v", n.ID, err)
			c.Listed = append(c.Listed, -1)
			continue
		}
		ids, hosts := map[shared.MachineID]bool{}, map[string]bool{}
		listed := 0
		for _, m := range ms {
			if m.ID == probe {
				continue
			}
			listed++
			if ids[m.ID] || hosts[m.Hostname] {
				c.Duplicates++
			}
			ids[m.ID], hosts[m.Hostname] = true, true
			if i == 0 && m.State != shared.StateReady {
				c.NotReady = append(c.NotReady, fmt.Sprintf("%s (%s, %s)", m.ID, m.State, m.Error))
			}
		}
		c.Listed = append(c.Listed, listed)
	}
	c.LostAcks = h.lostAcks(ctx)
	return c
}

// lostAcks fetches every machine's record and lists acknowledged results it lacks.
func (h *fleetRun) lostAcks(ctx context.Context) []string {
	admin := h.cluster.Client()
	jobs := make(chan *fleetsim.Machine)
	var mu sync.Mutex
	var lost []string
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sim := range jobs {
				if sim.ID == "" {
					continue // never registered: nothing was acknowledged
				}
				rec, err := admin.Machine(ctx, sim.ID)
				var miss []string
				switch {
				case err != nil:
					miss = append(miss, fmt.Sprintf("%s: registration acknowledged, record: %v", sim.ID, err))
				default:
					have := map[string]shared.StepStatus{}
					for _, st := range rec.Steps {
						have[st.Name] = st.Status
					}
					for name, acked := range sim.Acked() {
						if have[name] != acked {
							miss = append(miss, fmt.Sprintf("%s step %s: acknowledged %s, recorded %q (state %s; timeline: %s)",
								sim.ID, name, acked, have[name], rec.State, lastEvents(ctx, admin, sim.ID, 6)))
						}
					}
				}
				if len(miss) > 0 {
					mu.Lock()
					lost = append(lost, miss...)
					mu.Unlock()
				}
			}
		}()
	}
	for _, m := range h.fleet.Machines() {
		jobs <- m
	}
	close(jobs)
	wg.Wait()
	return lost
}

// storage snapshots every coordinator, measures the leader's log and snapshot, decodes
// the snapshot into a store as a restarting coordinator does, and restarts one follower
// to time how long it takes to catch up.
func (h *fleetRun) storage(ctx context.Context) {
	leader, err := h.cluster.Leader(ctx)
	if err != nil {
		h.logf("storage: %v", err)
		return
	}
	for _, n := range h.cluster.Nodes {
		t := time.Now()
		if _, err := h.cluster.Client(n).Snapshot(ctx); err != nil {
			h.logf("storage: snapshot on %s: %v", n.ID, err)
			continue
		}
		h.res.SnapshotTime = max(h.res.SnapshotTime, time.Since(t))
	}
	if info, err := os.Stat(filepath.Join(leader.DataDir, "raft.db")); err == nil {
		h.res.RaftLogBytes = info.Size()
	}
	path, size := newest(filepath.Join(leader.DataDir, "snapshots", "*", "state.bin"))
	h.res.SnapshotBytes = size
	if path != "" {
		if f, err := os.Open(path); err == nil {
			t := time.Now()
			if err := (&fsm.FSM{Store: state.New()}).Restore(f); err != nil {
				h.logf("storage: restoring %s: %v", path, err)
			}
			h.res.RestoreTime = time.Since(t)
		}
	}
	var follower *coordinatortest.Node
	for _, n := range h.cluster.Nodes {
		if n != leader {
			follower = n
		}
	}
	if follower == nil {
		return
	}
	h.cluster.Kill(follower)
	t := time.Now()
	if err := h.cluster.Restart(ctx, follower); err != nil {
		h.logf("storage: %v", err)
		return
	}
	want, err := h.cluster.Client(leader).Digest(ctx)
	if err != nil {
		return
	}
	err = testenv.Poll(ctx, 2*time.Minute, follower.ID+" caught up with the leader", func() error {
		d, err := h.cluster.Client(follower).Digest(ctx)
		if err != nil {
			return err
		}
		if d.Index < want.Index {
			return fmt.Errorf("at %d of %d", d.Index, want.Index)
		}
		return nil
	})
	if err != nil {
		h.logf("storage: %s did not catch up: %v", follower.ID, err)
		return
	}
	h.res.CatchUpTime = time.Since(t)
}

// profile saves every coordinator's CPU profile over 20 s once a third of the fleet is
// writing images, the busiest stretch of a run.
func (h *fleetRun) profile(ctx context.Context) {
	if !h.waitFor(ctx, fleetsim.MilestoneImaging, max(h.opts.Machines/3, 1)) {
		return
	}
	h.fetchProfiles(ctx, "/debug/pprof/profile?seconds=20", "cpu")
}

func (h *fleetRun) heapProfiles(ctx context.Context) {
	h.fetchProfiles(ctx, "/debug/pprof/heap", "heap")
}

func (h *fleetRun) fetchProfiles(ctx context.Context, path, kind string) {
	if err := os.MkdirAll(h.opts.PprofDir, 0o755); err != nil {
		h.logf("pprof: %v", err)
		return
	}
	var wg sync.WaitGroup
	for _, n := range h.cluster.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := h.cluster.Client(n).Open(ctx, path, nil)
			if err != nil {
				h.logf("pprof %s on %s: %v", kind, n.ID, err)
				return
			}
			defer resp.Body.Close()
			out := filepath.Join(h.opts.PprofDir, kind+"-"+n.ID+".pprof")
			f, err := os.Create(out)
			if err != nil {
				return
			}
			defer f.Close()
			if _, err := io.Copy(f, resp.Body); err == nil {
				h.logf("pprof: saved %s", out)
			}
		}()
	}
	wg.Wait()
}

// Digital Rebar's published figures, the anchors.
const (
	rebarMBPer1000     = 500.0
	rebarTxPer5Min     = 1000.0
	rebarCores         = 6.0
	thisMachineCores   = 2.0
	goalToReady        = 5 * time.Minute
	goalRSSBytesAt10k  = 500 << 20
	goalSerfConvergeAt = 5 * time.Second
)

func printFleet(w io.Writer, r *FleetResult) {
	per1000 := float64(r.Machines) / 1000
	var cpuSum float64
	var peak int64
	for i, c := range r.CoordCPU {
		cpuSum += c
		peak = max(peak, r.PeakRSS[i])
	}
	mb := func(b int64) float64 { return float64(b) / (1 << 20) }
	fmt.Fprintf(w, "rivet-figure: fleet machines=%d ready=%d serf_members=%d to_ready_s=%.1f api_calls=%d api_p50_ms=%.2f "+
		"api_p99_ms=%.1f writes_acked_per_s=%.0f raft_entries_per_s=%.0f raft_log_mb=%.1f snapshot_mb=%.1f snapshot_s=%.2f "+
		"restore_s=%.2f follower_catchup_s=%.2f coord_cpu_s=%s coord_cpu_s_per_1000=%.1f peak_rss_mb=%s "+
		"peak_rss_mb_per_1000=%.0f peak_rss_mb_until_ready=%s sim_cpu_s=%.0f serf_join_converge_s=%s serf_ready_tags_converge_s=%s load_before=%q load_after=%q\n",
		r.Machines, r.Ready, r.SerfMembers, r.ToReady.Seconds(), r.API.Calls, ms(r.API.P50), ms(r.API.P99),
		r.WritesPerSec, r.RaftEntriesPerSec, mb(r.RaftLogBytes), mb(r.SnapshotBytes), r.SnapshotTime.Seconds(),
		r.RestoreTime.Seconds(), r.CatchUpTime.Seconds(), floats(r.CoordCPU, "%.0f"), cpuSum/per1000,
		floats(mbs(r.PeakRSS), "%.0f"), mb(peak)/per1000, floats(mbs(r.PeakRSSRun), "%.0f"), r.SimCPU, seconds(r.SerfJoin), seconds(r.SerfTags),
		r.LoadBefore, r.LoadAfter)
	tx5 := r.WritesPerSec * 300
	fmt.Fprintf(w, "rivet-figure: fleet anchors machines=%d rss_mb_per_1000=%.0f vs_digital_rebar=%.0f (%.2fx less) "+
		"transactions_per_5min=%.0f vs_digital_rebar=%.0f_on_6_cores (%.0fx; per core %.0fx) "+
		"goals: ready<=300s %s, peak_rss<=500MB@10k %s, serf<=5s %s\n",
		r.Machines, mb(peak)/per1000, rebarMBPer1000, rebarMBPer1000/(mb(peak)/per1000),
		tx5, rebarTxPer5Min, tx5/rebarTxPer5Min, (tx5/thisMachineCores)/(rebarTxPer5Min/rebarCores),
		verdict(r.Ready == r.Machines && r.ToReady <= goalToReady), verdict(r.Machines < 10000 || peak <= goalRSSBytesAt10k),
		verdict(r.SerfMembers == 0 || (r.SerfTags > 0 && r.SerfTags <= goalSerfConvergeAt)))
	routes := make([]string, 0, len(r.API.Routes))
	for k := range r.API.Routes {
		routes = append(routes, k)
	}
	sort.Strings(routes)
	for _, k := range routes {
		rt := r.API.Routes[k]
		fmt.Fprintf(w, "  route %-15s calls=%-7d p50_ms=%-8.2f p99_ms=%.1f\n", k, rt.Calls, ms(rt.P50), ms(rt.P99))
	}
	for _, k := range r.API.FailureKeys() {
		fmt.Fprintf(w, "  failed %-18s %6d  first: %s\n", k, r.API.Failures[k], truncate(r.API.FirstError[k], 240))
	}
	if r.API.SwarmWaits > 0 {
		fmt.Fprintf(w, "  swarm-join answered \"swarm does not exist yet\" %d times (the real agent fails the step after 3)\n", r.API.SwarmWaits)
	}
	for _, f := range r.Faults {
		fmt.Fprintf(w, "rivet-figure: fleet fault=%s at_s=%.1f recovered=%v %s\n", f.Name, f.At.Seconds(), f.Recovered, f.Detail)
	}
	c := r.Check
	fmt.Fprintf(w, "rivet-figure: fleet check machines=%d listed=%v duplicates=%d not_ready=%d lost_acks=%d digests_equal=%v digest=%.12s@%d\n",
		r.Machines, c.Listed, c.Duplicates, len(c.NotReady), len(c.LostAcks), c.DigestsEqual, c.Digest.SHA256, c.Digest.Index)
	for i, s := range append(c.NotReady, c.LostAcks...) {
		if i == 10 {
			fmt.Fprintf(w, "  ... and %d more\n", len(c.NotReady)+len(c.LostAcks)-10)
			break
		}
		fmt.Fprintf(w, "  problem: %s\n", s)
	}
}

// seconds prints a measured duration, or "none" when it was not measured.
func seconds(d time.Duration) string {
	if d <= 0 {
		return "none"
	}
	return fmt.Sprintf("%.2f", d.Seconds())
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func mbs(bs []int64) []float64 {
	out := make([]float64, len(bs))
	for i, b := range bs {
		out[i] = float64(b) / (1 << 20)
	}
	return out
}

func floats(fs []float64, format string) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = fmt.Sprintf(format, f)
	}
	return strings.Join(parts, ",")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// lastEvents is the end of a machine's timeline, for a problem report.
func lastEvents(ctx context.Context, c *shared.Client, id shared.MachineID, n int) string {
	evs, err := c.Events(ctx, id)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, e := range evs[max(0, len(evs)-n):] {
		parts = append(parts, fmt.Sprintf("#%d %s", e.Index, e.Message))
	}
	return strings.Join(parts, " | ")
}
