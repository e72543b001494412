package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/coordinator/powerctl"
	"github.com/rivetmetal/rivet/internal/bmcfarm"
)

// PowerOptions configures the BMC power bench. Zero values take the defaults.
type PowerOptions struct {
	BMCs     int    // BMCs in the farm, all switched on by every method; default 200
	Batch    int    // Rivet's fan-out width and xargs -P; default 20
	IPMITool string // ipmitool binary; default ipmitool from PATH
	// FarmCommand makes the command of the farm process given the farm's arguments
	// (bmcfarm.Main's); default: this executable's hidden `bmcfarm` subcommand, which is
	// what rivet-bench has. The bench adds the password to its environment.
	FarmCommand func(args []string) *exec.Cmd
}

func (o *PowerOptions) powerDefaults() {
	orDefault(&o.BMCs, 200)
	orDefault(&o.Batch, 20)
	orDefault(&o.IPMITool, "ipmitool")
}

// PowerPhase is one way of switching every BMC on, measured.
type PowerPhase struct {
	Method  string
	Wall    time.Duration
	CPU     time.Duration // the method's own CPU: Rivet's process, or the shell and every ipmitool
	FarmCPU time.Duration // the BMCs' CPU over the phase, for scale
}

// PowerResult is the bench's figures.
type PowerResult struct {
	BMCs                 int
	Rivet, ForLoop, Xarg PowerPhase
	Status               PowerPhase // Rivet reading every BMC's status: one session per BMC
}

// The BMCs' administrator. These are a bench's made-up credentials, on loopback only;
// the password is on ipmitool's command line because that is how operators script it.
const (
	powerUser     = "u"
	powerPassword = "p"
)

// Power measures switching a rack of BMCs on: Rivet's batched fan-out of its IPMI
// driver (powerctl.FanOut, stagger 0; each On reads the status, sends the control and
// reads the status until on) against what an operator scripts today, a shell for loop of
// `ipmitool -I lanplus -C 3 ... chassis power on`, and xargs -P running the same
// ipmitool in parallel. The BMCs are a farm of go-ipmi's reference BMC in a child
// process (internal/bmcfarm), so Rivet's CPU figure is this process's alone. Before each
// method every chassis is switched off, after it every BMC must report on.
func Power(ctx context.Context, w io.Writer, opts PowerOptions) (PowerResult, error) {
	opts.powerDefaults()
	res := PowerResult{BMCs: opts.BMCs}
	tool, err := exec.LookPath(opts.IPMITool)
	if err != nil {
		return res, fmt.Errorf("power bench: %s not found: %w (apt-get install ipmitool)", opts.IPMITool, err)
	}
	farm, err := startPowerFarm(ctx, opts)
	if err != nil {
		return res, err
	}
	defer farm.Close()
	ports := farm.Ports()

	phases := []struct {
		into *PowerPhase
		name string
		run  func(context.Context) (time.Duration, error) // returns the method's CPU
	}{
		{&res.Rivet, fmt.Sprintf("rivet-fanout-%d", opts.Batch), func(ctx context.Context) (time.Duration, error) {
			return powerRivet(ctx, ports, opts.Batch, (*power.IPMI).On)
		}},
		{&res.ForLoop, "ipmitool-for-loop", func(ctx context.Context) (time.Duration, error) {
			return powerShell(ctx, powerForLoop, tool, ports, opts.Batch)
		}},
		{&res.Xarg, fmt.Sprintf("ipmitool-xargs-P%d", opts.Batch), func(ctx context.Context) (time.Duration, error) {
			return powerShell(ctx, powerXargs, tool, ports, opts.Batch)
		}},
	}
	for _, ph := range phases {
		*ph.into, err = powerPhase(ctx, farm, ph.name, ph.run)
		if err != nil {
			return res, err
		}
		if err := powerFigure(w, opts.BMCs, *ph.into); err != nil {
			return res, err
		}
	}
	// Where Rivet's time goes: reading the status is one session per BMC, On is three
	// (status, control, status). Every BMC is on now and stays on.
	res.Status, err = powerMeasure(ctx, farm, fmt.Sprintf("rivet-status-fanout-%d", opts.Batch), func(ctx context.Context) (time.Duration, error) {
		return powerRivet(ctx, ports, opts.Batch, func(d *power.IPMI, ctx context.Context) error {
			st, err := d.Status(ctx)
			if err == nil && st != power.StateOn {
				err = fmt.Errorf("status %s, want on", st)
			}
			return err
		})
	})
	if err != nil {
		return res, err
	}
	if err := powerFigure(w, opts.BMCs, res.Status); err != nil {
		return res, err
	}
	r, f, x := res.Rivet.Wall.Seconds(), res.ForLoop.Wall.Seconds(), res.Xarg.Wall.Seconds()
	_, err = fmt.Fprintf(w, "rivet-figure: power on bmcs=%d batch=%d rivet_s=%.3f for_loop_s=%.3f xargs_s=%.3f "+
		"ratio_vs_for_loop=%.1fx ratio_vs_xargs=%.1fx goal=10x rivet_cpu_ms_per_bmc=%.2f ipmitool_cpu_ms_per_bmc=%.2f\n",
		opts.BMCs, opts.Batch, r, f, x, f/r, x/r,
		perBMCms(res.Rivet.CPU, opts.BMCs), perBMCms(res.ForLoop.CPU, opts.BMCs))
	return res, err
}

func startPowerFarm(ctx context.Context, opts PowerOptions) (*bmcfarm.Process, error) {
	args := []string{"--bmcs", strconv.Itoa(opts.BMCs), "--user", powerUser}
	var cmd *exec.Cmd
	if opts.FarmCommand != nil {
		cmd = opts.FarmCommand(args)
	} else {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("power bench: find rivet-bench to run the BMC farm: %w", err)
		}
		cmd = exec.Command(self, append([]string{"bmcfarm"}, args...)...)
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, bmcfarm.PasswordEnv+"="+powerPassword)
	farm, err := bmcfarm.StartProcess(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("power bench: %w", err)
	}
	if len(farm.Ports()) != opts.BMCs {
		farm.Close()
		return nil, fmt.Errorf("power bench: the farm has %d BMCs, want %d", len(farm.Ports()), opts.BMCs)
	}
	return farm, nil
}

// powerPhase switches every chassis off, checks that every BMC reports off, runs one
// method and checks that every BMC reports on.
func powerPhase(ctx context.Context, farm *bmcfarm.Process, name string, run func(context.Context) (time.Duration, error)) (PowerPhase, error) {
	if err := farm.PowerOffAll(ctx); err != nil {
		return PowerPhase{}, fmt.Errorf("power bench: %s: switch the farm off: %w", name, err)
	}
	if err := powerCheck(ctx, farm, false); err != nil {
		return PowerPhase{}, fmt.Errorf("power bench: before %s: %w", name, err)
	}
	return powerMeasure(ctx, farm, name, run)
}

// powerMeasure times run, takes its CPU and the farm's, and checks that every BMC
// reports on afterwards.
func powerMeasure(ctx context.Context, farm *bmcfarm.Process, name string, run func(context.Context) (time.Duration, error)) (PowerPhase, error) {
	ph := PowerPhase{Method: name}
	farmBefore, _ := procTicks(farm.PID(), 11, 13) // utime, stime
	t0 := time.Now()
	cpu, err := run(ctx)
	ph.Wall = time.Since(t0)
	farmAfter, _ := procTicks(farm.PID(), 11, 13)
	ph.CPU = cpu
	ph.FarmCPU = time.Duration(farmAfter-farmBefore) * time.Second / clockTicks
	if err != nil {
		return ph, fmt.Errorf("power bench: %s: %w", name, err)
	}
	if err := powerCheck(ctx, farm, true); err != nil {
		return ph, fmt.Errorf("power bench: after %s: %w", name, err)
	}
	return ph, nil
}

// powerCheck asks the farm for every BMC's power and fails unless all are as wanted,
// naming how many and the first few that are not.
func powerCheck(ctx context.Context, farm *bmcfarm.Process, on bool) error {
	states, err := farm.PowerStates(ctx)
	if err != nil {
		return err
	}
	var wrong []string
	for i, s := range states {
		if s != on {
			wrong = append(wrong, fmt.Sprintf("%d (port %d)", i, farm.Ports()[i]))
		}
	}
	if len(wrong) == 0 {
		return nil
	}
	want := map[bool]string{true: "on", false: "off"}[on]
	return fmt.Errorf("%d of %d BMCs are %s, want every one %s: BMC %s",
		len(states)-len(wrong), len(states), want, want, strings.Join(wrong[:min(len(wrong), 5)], ", "))
}

// powerRivet calls do for every BMC with Rivet's fan-out, as the power manager does for
// a selection of machines (batch at once, no stagger), and returns this process's CPU
// over it. Every BMC's driver is made inside the measured span, as the manager makes
// them from the store's rows.
func powerRivet(ctx context.Context, ports []int, batch int, do func(*power.IPMI, context.Context) error) (time.Duration, error) {
	cpu0 := processCPU()
	outs := powerctl.FanOut(ctx, ports, batch, 0, func(ctx context.Context, port int) error {
		d, err := power.NewIPMI(power.IPMIConfig{Host: "127.0.0.1", Port: port, User: powerUser,
			Password: powerPassword, CipherSuite: 3})
		if err != nil {
			return err
		}
		return do(d, ctx)
	})
	cpu := processCPU() - cpu0
	var errs []error
	for _, o := range outs {
		if o.Err != nil {
			errs = append(errs, fmt.Errorf("port %d: %w", o.Target, o.Err))
		}
	}
	if len(errs) > 0 {
		return cpu, fmt.Errorf("%d of %d BMCs failed, first: %w", len(errs), len(ports), errs[0])
	}
	return cpu, nil
}

// The operator's scripts: one bash process whose loop (or xargs) runs one ipmitool per
// BMC. $IPMITOOL, $PORTS and $P come from the environment so that the script is the
// same for every run.
const (
	powerForLoop = `for port in $PORTS; do
  "$IPMITOOL" -I lanplus -C 3 -H 127.0.0.1 -p "$port" -U u -P p chassis power on >/dev/null || exit 1
done`
	powerXargs = `printf '%s\n' $PORTS | xargs -P "$P" -I{} "$IPMITOOL" -I lanplus -C 3 -H 127.0.0.1 -p {} -U u -P p chassis power on >/dev/null`
)

// powerShell runs script in bash and returns the CPU of bash and of every process it and
// its children waited for (the ipmitools), from wait4's rusage.
func powerShell(ctx context.Context, script, tool string, ports []int, parallel int) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Env = append(os.Environ(), "IPMITOOL="+tool, "PORTS="+joinPorts(ports), "P="+strconv.Itoa(parallel))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return cpu, fmt.Errorf("bash: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	if stderr.Len() > 0 {
		return cpu, errors.New("ipmitool complained: " + string(bytes.TrimSpace(stderr.Bytes())))
	}
	return cpu, nil
}

func joinPorts(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, " ")
}

func perBMCms(d time.Duration, bmcs int) float64 {
	return float64(d.Microseconds()) / 1000 / float64(bmcs)
}

func powerFigure(w io.Writer, bmcs int, ph PowerPhase) error {
	_, err := fmt.Fprintf(w, "rivet-figure: power method=%s bmcs=%d wall_s=%.3f per_bmc_ms=%.2f cpu_s=%.3f cpu_ms_per_bmc=%.2f farm_cpu_s=%.2f\n",
		ph.Method, bmcs, ph.Wall.Seconds(), perBMCms(ph.Wall, bmcs), ph.CPU.Seconds(), perBMCms(ph.CPU, bmcs), ph.FarmCPU.Seconds())
	return err
}
