package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/rivetmetal/rivet/coordinator/cli"
	"github.com/rivetmetal/rivet/coordinator/status/statustest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// watchFleet starts a coordinator with n planned machines and returns an env file for
// the CLI.
func watchFleet(t *testing.T, n int) (*statustest.Fleet, string) {
	t.Helper()
	c := statustest.Start(t, t.TempDir())
	f, err := statustest.Planned(context.Background(), c, n, func(i int) map[string]string {
		return map[string]string{"pool": "sim", "hostname": fmt.Sprintf("node-%d", i)}
	})
	if err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(t.TempDir(), "operator.env")
	if err := c.WriteCredentials(envFile); err != nil {
		t.Fatal(err)
	}
	return f, envFile
}

// drive moves the fleet along while watch runs: progress on every machine, then all
// finish but the last, which fails. It waits for seen() before each phase, so the watch
// has drawn the previous one.
func drive(t *testing.T, f *statustest.Fleet, seen func(string) bool) {
	ctx := context.Background()
	testenv.Eventually(t, 30*time.Second, "the watch to show planned", testenv.Holds(func() bool { return seen("planned") }, nil))
	for i, m := range f.Machines {
		if err := m.Provisioning(ctx, 20+10*i); err != nil {
			t.Error(err)
			return
		}
	}
	testenv.Eventually(t, 30*time.Second, "the watch to show provisioning", testenv.Holds(func() bool { return seen("provisioning") }, nil))
	for i, m := range f.Machines {
		var err error
		if i == len(f.Machines)-1 {
			err = m.Report(ctx, "image", shared.StepFailed, nil, "sha256 mismatch")
		} else {
			err = m.Install(ctx, true, true)
		}
		if err != nil {
			t.Error(err)
			return
		}
	}
}

func TestWatchOnATerminal(t *testing.T) {
	f, envFile := watchFleet(t, 4)
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 30, Cols: 160}); err != nil {
		t.Fatal(err)
	}
	var screen testenv.LogBuffer
	go func() { _, _ = io.Copy(&screen, ptmx) }()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, []string{"machines", "watch", "--env-file", envFile}, tty, tty) }()
	drive(t, f, func(s string) bool { return strings.Contains(screen.String(), s) })

	var runErr error
	select {
	case runErr = <-done:
	case <-ctx.Done():
		t.Fatalf("watch did not exit after the fleet settled; screen:\n%s", screen.String())
	}
	testenv.Eventually(t, 30*time.Second, "the screen to show Fleet settled", testenv.Holds(func() bool { return strings.Contains(screen.String(), "Fleet settled") }, nil))
	out := screen.String()
	if runErr == nil || !strings.Contains(runErr.Error(), "1 machines failed") {
		t.Errorf("watch returned %v, want the failed machine counted", runErr)
	}
	for _, want := range []string{
		"\x1b[H\x1b[2J", // redrawn in place
		"PROGRESS", "RATE",
		"] ",          // a progress bar
		"110.0 MiB/s", // the rate
		"sha256 mismatch",
		"Fleet settled: 3 ready, 1 failed.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the terminal never showed %q", want)
		}
	}
	if !strings.Contains(out, "[####") {
		t.Errorf("no filled progress bar on the terminal")
	}
	// An installed machine is named as its OS is (the hostname label here), not as the
	// RAM agent registered it (sim-NNNNN); the one that failed before installing keeps that.
	frames := strings.Split(out, "\x1b[H\x1b[2J")
	last := frames[len(frames)-1]
	for _, m := range f.Machines[:len(f.Machines)-1] {
		if !regexp.MustCompile(string(m.ID) + ` +node-` + strconv.Itoa(m.Index) + ` +ready`).MatchString(last) {
			t.Errorf("installed machine %s is not shown as node-%d in the last frame", m.ID, m.Index)
		}
	}
	if t.Failed() || testing.Verbose() {
		frames := strings.Split(out, "\x1b[H\x1b[2J")
		t.Logf("last frames:\n%s", strings.Join(frames[max(0, len(frames)-3):], "\n-----\n"))
	}
}

func TestWatchStreamsJSONLines(t *testing.T) {
	f, envFile := watchFleet(t, 3)
	var out testenv.LogBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- cli.Run(ctx, []string{"machines", "watch", "--env-file", envFile, "--output", "json"}, &out, io.Discard)
	}()
	drive(t, f, func(s string) bool { return strings.Contains(out.String(), `"state":"`+s+`"`) })
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("watch did not exit; output:\n%s", out.String())
	}
	var last map[string]any
	states := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		if s, ok := line["state"].(string); ok {
			states[s] = true
		}
		last = line
	}
	for _, s := range []string{"planned", "provisioning", "ready", "failed"} {
		if !states[s] {
			t.Errorf("no JSON line with state %s", s)
		}
	}
	if last["settled"] != true {
		t.Errorf("last line %v, want the settled summary", last)
	}
}
