package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/bmcfarm"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// farmChild, when set in the environment, makes the test binary the power bench's BMC
// farm (bmcfarm.Main with the process's arguments) instead of running the tests, as
// rivet-bench's hidden bmcfarm subcommand is for the real bench.
const farmChild = "RIVET_BENCH_TEST_BMCFARM"

func TestMain(m *testing.M) {
	if os.Getenv(farmChild) != "" {
		if err := bmcfarm.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "bmcfarm:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testFarmCommand(args []string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), farmChild+"=1")
	return cmd
}

// TestPowerBenchSwitchesEveryBMCOn runs the power bench small. Power itself fails unless
// every BMC reports off before and on after each method; the test also checks that the
// farm process is gone afterwards and that every figure line is there with positive
// times. How fast is never a verdict.
func TestPowerBenchSwitchesEveryBMCOn(t *testing.T) {
	testenv.RequireCommand(t, "ipmitool")
	var farm *exec.Cmd
	farmCommand := func(args []string) *exec.Cmd {
		farm = testFarmCommand(args)
		return farm
	}
	var res PowerResult
	out := benchFigure(t, 2*time.Minute, func(ctx context.Context, out *bytes.Buffer) error {
		var err error
		res, err = Power(ctx, out, PowerOptions{BMCs: 5, Batch: 3, FarmCommand: farmCommand})
		return err
	}, `(?m)^rivet-figure: power on bmcs=5 batch=3 rivet_s=([\d.]+) for_loop_s=([\d.]+) xargs_s=([\d.]+) `+
		`ratio_vs_for_loop=[\d.]+x ratio_vs_xargs=[\d.]+x goal=10x rivet_cpu_ms_per_bmc=[\d.]+ ipmitool_cpu_ms_per_bmc=([\d.]+)$`)

	for _, method := range []string{"rivet-fanout-3", "ipmitool-for-loop", "ipmitool-xargs-P3", "rivet-status-fanout-3"} {
		re := regexp.MustCompile(`(?m)^rivet-figure: power method=` + method + ` bmcs=5 wall_s=[\d.]+ per_bmc_ms=[\d.]+ cpu_s=[\d.]+ cpu_ms_per_bmc=[\d.]+ farm_cpu_s=[\d.]+$`)
		if !re.MatchString(out) {
			t.Errorf("no figure line for %s matching %s", method, re)
		}
	}
	for _, ph := range []PowerPhase{res.Rivet, res.ForLoop, res.Xarg, res.Status} {
		if ph.Wall <= 0 {
			t.Errorf("%s: wall time %s", ph.Method, ph.Wall)
		}
	}
	// The shell's figure counts the ipmitool processes (wait4's rusage of the children):
	// five of them cannot take no CPU at all.
	if res.ForLoop.CPU <= 0 || res.Xarg.CPU <= 0 {
		t.Errorf("ipmitool CPU for loop %s, xargs %s: the children's CPU was not counted", res.ForLoop.CPU, res.Xarg.CPU)
	}
	// Power waited for its farm: the process is reaped, not only killed.
	if farm == nil || farm.ProcessState == nil {
		t.Error("the farm process was not waited for when the bench ended")
	}
}

// TestPowerBenchFailsWhenABMCStaysOff checks the bench's own verdict on the farm: a
// method that leaves a BMC off must fail the bench, naming the BMC.
func TestPowerBenchFailsWhenABMCStaysOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := PowerOptions{BMCs: 3, FarmCommand: testFarmCommand}
	opts.powerDefaults()
	farm, err := startPowerFarm(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer farm.Close()
	_, err = powerPhase(ctx, farm, "do-nothing", func(context.Context) (time.Duration, error) { return 0, nil })
	if err == nil || !regexp.MustCompile(`0 of 3 BMCs are on, want every one on: BMC 0 \(port \d+\)`).MatchString(err.Error()) {
		t.Fatalf("a phase that switched nothing on: %v; want it to fail naming the BMCs", err)
	}
}
