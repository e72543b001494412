package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/rivetmetal/rivet/coordinator"
	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/coordinator/powerctl"
	"github.com/rivetmetal/rivet/shared"
)

const bmcSecret = "Hunter2-bmc-password"

// bmcs are fake BMCs by address, counting the calls they got.
type bmcs struct {
	mu    sync.Mutex
	calls []string
	on    map[string]bool
}

type fakeBMC struct {
	b    *bmcs
	addr string
}

func (d fakeBMC) note(what string) {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.b.calls = append(d.b.calls, d.addr+" "+what)
}

func (d fakeBMC) Status(context.Context) (power.State, error) {
	d.note("status")
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	if d.b.on[d.addr] {
		return power.StateOn, nil
	}
	return power.StateOff, nil
}
func (d fakeBMC) On(context.Context) error    { return d.set(true, "on") }
func (d fakeBMC) Off(context.Context) error   { return d.set(false, "off") }
func (d fakeBMC) Cycle(context.Context) error { return d.set(true, "cycle") }
func (d fakeBMC) SetBootDevice(_ context.Context, dev power.BootDevice) error {
	d.note("boot " + string(dev))
	return nil
}
func (d fakeBMC) set(on bool, what string) error {
	d.note(what)
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.b.on[d.addr] = on
	return nil
}

func (b *bmcs) driver(bmc shared.BMC) (power.Driver, error) {
	if bmc.Password != bmcSecret {
		return nil, fmt.Errorf("the driver got the wrong password")
	}
	return fakeBMC{b: b, addr: bmc.Address}, nil
}

func (b *bmcs) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.calls)
}

// targets resolves the registered machines, each with a BMC.
type targets struct {
	mu  sync.Mutex
	ids []shared.MachineID
}

func (r *targets) target(i int) powerctl.Target {
	return powerctl.Target{MachineID: r.ids[i], Hostname: fmt.Sprintf("node%d", i), Labels: map[string]string{"rack": fmt.Sprintf("r%d", i%2)},
		BMC: shared.BMC{Driver: shared.BMCIPMI, Address: fmt.Sprintf("10.9.0.%d", i+1), User: "admin", Password: bmcSecret}}
}

func (r *targets) PowerTarget(ref string) (powerctl.Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.ids {
		if t := r.target(i); string(t.MachineID) == ref || t.Hostname == ref {
			return t, nil
		}
	}
	return powerctl.Target{}, fmt.Errorf("%q: %w", ref, powerctl.ErrUnknownTarget)
}

func (r *targets) PowerTargets(sel map[string]string, all bool) ([]powerctl.Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []powerctl.Target
	for i := range r.ids {
		if t := r.target(i); all || t.Labels["rack"] == sel["rack"] {
			out = append(out, t)
		}
	}
	return out, nil
}

func startPower(t *testing.T, n int) (*fixture, *bmcs, *targets) {
	t.Helper()
	b := &bmcs{on: map[string]bool{}}
	res := &targets{}
	f := startWith(t, coordinator.DaemonConfig{Power: coordinator.PowerOptions{Drivers: b.driver, Resolver: res}})
	for i := range n {
		res.ids = append(res.ids, f.register(t, i+1).Machine.ID)
	}
	return f, b, res
}

// noSecret fails if the BMC password is in text; what names the text, and the text must
// hold want (the guard that there was something to search).
func noSecret(t *testing.T, what, text, want string) {
	t.Helper()
	if !strings.Contains(text, want) {
		t.Fatalf("%s: %q is not in it, so the search proves nothing: %.400s", what, want, text)
	}
	if strings.Contains(text, bmcSecret) {
		t.Fatalf("%s carries the BMC password: %.2000s", what, text)
	}
}

func TestPowerAdminOnlyAndBadBodiesChangeNothing(t *testing.T) {
	f, b, res := startPower(t, 2)
	ctx := context.Background()
	admin := f.c.Client(f.c.AdminToken)
	viewer, err := admin.CreateToken(ctx, &shared.TokenRequest{Name: "watcher", Role: shared.TokenViewer})
	if err != nil {
		t.Fatal(err)
	}
	one := shared.MachinePath(shared.PathMachinePower, res.ids[0])
	before := f.digest(t)
	for _, c := range []struct {
		token, path, body string
		want              int
	}{
		{viewer.Secret, one, `{"action":"on"}`, http.StatusForbidden},
		{viewer.Secret, shared.PathPower, `{"action":"on","all":true}`, http.StatusForbidden},
		{f.c.EnrolToken, one, `{"action":"on"}`, http.StatusForbidden},
		{"", one, `{"action":"on"}`, http.StatusUnauthorized},
		{f.c.AdminToken, one, `{"action":"explode"}`, http.StatusBadRequest},
		{f.c.AdminToken, one, `{"action":"status","pxe_once":true}`, http.StatusBadRequest},
		{f.c.AdminToken, one, `{"action":"on","bmc":"x"}`, http.StatusBadRequest},
		{f.c.AdminToken, one, `{"action":"on"} {}`, http.StatusBadRequest},
		{f.c.AdminToken, one, `not json`, http.StatusBadRequest},
		{f.c.AdminToken, shared.PathPower, `{"action":"on"}`, http.StatusBadRequest},
		{f.c.AdminToken, shared.PathPower, `{"action":"on","all":true,"refs":["x"]}`, http.StatusBadRequest},
		{f.c.AdminToken, shared.PathPower, `{"action":"on","all":true,"batch":5000}`, http.StatusBadRequest},
		{f.c.AdminToken, shared.PathPower, `{"action":"on","all":true,"stagger":"-1s"}`, http.StatusBadRequest},
		{f.c.AdminToken, shared.PathPower, `{"action":"on","all":true,"stagger":"soon"}`, http.StatusBadRequest},
		{f.c.AdminToken, shared.PathPower, `{"action":"on","selector":{"bad key!":"x"}}`, http.StatusBadRequest},
		{f.c.AdminToken, shared.PathPower, `{"action":"on","refs":["node0","ghost"]}`, http.StatusNotFound},
		{f.c.AdminToken, shared.MachinePath(shared.PathMachinePower, "ghost"), `{"action":"on"}`, http.StatusNotFound},
	} {
		status, body := f.raw(t, "POST", c.path, c.token, []byte(c.body))
		if status != c.want || !strings.Contains(body, `"error"`) {
			t.Errorf("POST %s %s: %d %s, want %d with the error envelope", c.path, c.body, status, body, c.want)
		}
	}
	if b.count() != 0 {
		t.Fatalf("refused calls reached a BMC: %v", b.calls)
	}
	if after := f.digest(t); after != before {
		t.Fatal("a refused power call changed the state")
	}
}

func TestPowerAnswersAndTimeline(t *testing.T) {
	f, b, res := startPower(t, 4)
	ctx := context.Background()
	admin := f.c.Client(f.c.AdminToken)
	status, body := f.raw(t, "POST", shared.MachinePath(shared.PathMachinePower, "node1"), f.c.AdminToken,
		[]byte(`{"action":"cycle","pxe_once":true}`))
	if status != http.StatusOK || !strings.Contains(body, `"state":"on"`) || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("cycle: %d %s", status, body)
	}
	noSecret(t, "the power answer", body, "ipmi admin@10.9.0.2")
	b.mu.Lock()
	calls := strings.Join(b.calls, ",")
	b.mu.Unlock()
	if calls != "10.9.0.2 boot pxe,10.9.0.2 cycle,10.9.0.2 status" {
		t.Fatalf("BMC calls %s", calls)
	}
	// The timeline: who asked and what the BMC answered, with no password.
	_, events := f.raw(t, "GET", shared.MachinePath(shared.PathMachineEvents, res.ids[1]), f.c.AdminToken, nil)
	noSecret(t, "the timeline", events, "power cycle (PXE once) by ")
	if !strings.Contains(events, "BMC reports power on") {
		t.Fatalf("timeline lacks the BMC's answer: %s", events)
	}
	_, machine := f.raw(t, "GET", shared.MachinePath(shared.PathMachine, res.ids[1]), f.c.AdminToken, nil)
	noSecret(t, "the machine", machine, `"last":{"action":"cycle"`)

	// A streamed batch: each outcome as it comes, then the counts.
	var seen []string
	out, err := admin.PowerBatch(ctx, &shared.PowerBatchRequest{PowerRequest: shared.PowerRequest{Action: shared.PowerOn},
		Selector: map[string]string{"rack": "r0"}, Batch: 1, Stagger: "1ms"}, func(o shared.PowerOutcome) { seen = append(seen, o.Hostname) })
	if err != nil || out.Succeeded != 2 || out.Failed != 0 || strings.Join(seen, ",") != "node0,node2" {
		t.Fatalf("batch: %+v, %v; seen %v", out, err, seen)
	}
	// Not streamed: one answer.
	status, body = f.raw(t, "POST", shared.PathPower, f.c.AdminToken, []byte(`{"action":"status","all":true}`))
	if status != http.StatusOK || !strings.Contains(body, `"succeeded":4`) {
		t.Fatalf("status of all: %d %s", status, body)
	}
	noSecret(t, "the batch answer", body, "ipmi admin@10.9.0.4")
	noSecret(t, "the logs", f.logs.String(), "power command done")
}
