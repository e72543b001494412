package bmcfarm

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// PasswordEnv is the environment variable a farm process takes its BMCs' password from,
// so that the password is not on its command line for ps to show.
const PasswordEnv = "RIVET_BMCFARM_PASSWORD"

// Main is a farm process: it parses args (--bmcs N --user NAME; the password comes from
// PasswordEnv), then Serves on stdin and stdout. rivet-bench runs it as its hidden
// `bmcfarm` subcommand.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bmcfarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := Config{Password: os.Getenv(PasswordEnv)}
	fs.IntVar(&cfg.BMCs, "bmcs", 200, "how many BMCs")
	fs.StringVar(&cfg.User, "user", "admin", "every BMC's administrator")
	fs.StringVar(&cfg.Host, "host", "127.0.0.1", "address the BMCs listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return Serve(ctx, cfg, stdin, stdout)
}

// Serve runs a farm and answers the farm protocol until in ends (the parent closed the
// pipe or died) or ctx ends. Its first line out is "ports P0 P1 ...". Then every line in
// is a command, answered by one line out:
//
//	off      switch every chassis off (directly, not over IPMI)   ok
//	states   every BMC's power, BMC 0 first, 1 is on              states 0110...
//
// An unknown command is answered "error ..." and does not end the farm.
func Serve(ctx context.Context, cfg Config, in io.Reader, out io.Writer) error {
	f, err := Start(cfg)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := fmt.Fprintln(out, "ports", joinInts(f.Ports())); err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			if _, err := fmt.Fprintln(out, f.answer(line)); err != nil {
				return err
			}
		}
	}
}

func (f *Farm) answer(command string) string {
	switch strings.TrimSpace(command) {
	case "off":
		f.SetAllPower(false)
		return "ok"
	case "states":
		var b strings.Builder
		for _, on := range f.PowerStates() {
			b.WriteByte("01"[boolIndex(on)])
		}
		return "states " + b.String()
	default:
		return fmt.Sprintf("error unknown command %q (want off or states)", command)
	}
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, " ")
}

// Process is a farm running in a child process (Serve at the other end of its stdin and
// stdout). Its methods are not safe for concurrent use.
type Process struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited; waitErr is then set
	waitErr error
	in      io.WriteCloser
	out     *bufio.Reader
	stderr  testenv.LogBuffer
	ports   []int
}

// StartProcess starts cmd, a program that runs Main or Serve, tied to this process (the
// kernel kills it if this process dies), and waits up to a minute for its ports.
func StartProcess(ctx context.Context, cmd *exec.Cmd) (*Process, error) {
	p := &Process{cmd: cmd}
	var err error
	if p.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.out = bufio.NewReader(stdout)
	cmd.Stderr = &p.stderr
	exited, err := testenv.StartTied(cmd, syscall.SIGKILL)
	if err != nil {
		return nil, fmt.Errorf("bmcfarm: start %s: %w", cmd.Path, err)
	}
	p.done = make(chan struct{})
	go func() {
		p.waitErr = <-exited
		close(p.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	line, err := p.readLine(ctx)
	if err == nil {
		p.ports, err = parsePorts(line)
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("bmcfarm: %s did not report its ports: %w; stderr: %s", cmd.Path, err, p.stderr.String())
	}
	return p, nil
}

func parsePorts(line string) ([]int, error) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "ports" {
		return nil, fmt.Errorf("first line %q is not \"ports P0 P1 ...\"", line)
	}
	ports := make([]int, len(f)-1)
	for i, s := range f[1:] {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("port %q in %q", s, line)
		}
		ports[i] = n
	}
	return ports, nil
}

// readLine reads the farm's next line; it gives up when ctx ends or the farm exits.
func (p *Process) readLine(ctx context.Context) (string, error) {
	type result struct {
		line string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		line, err := p.out.ReadString('\n')
		got <- result{strings.TrimSpace(line), err}
	}()
	select {
	case r := <-got:
		if r.err != nil {
			return "", fmt.Errorf("reading the farm's output: %w", r.err)
		}
		return r.line, nil
	case <-p.done:
		return "", fmt.Errorf("the farm exited: %v", p.waitErr)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// ask sends one command and returns its answer.
func (p *Process) ask(ctx context.Context, command string) (string, error) {
	if _, err := fmt.Fprintln(p.in, command); err != nil {
		return "", fmt.Errorf("bmcfarm: send %q: %w; stderr: %s", command, err, p.stderr.String())
	}
	line, err := p.readLine(ctx)
	if err != nil {
		return "", fmt.Errorf("bmcfarm: answer to %q: %w; stderr: %s", command, err, p.stderr.String())
	}
	if strings.HasPrefix(line, "error") {
		return "", fmt.Errorf("bmcfarm: %q: %s", command, line)
	}
	return line, nil
}

// Ports are the BMCs' UDP ports, BMC 0 first.
func (p *Process) Ports() []int { return p.ports }

// PID is the farm process's id, to measure its CPU.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// PowerOffAll switches every chassis off directly.
func (p *Process) PowerOffAll(ctx context.Context) error {
	_, err := p.ask(ctx, "off")
	return err
}

// PowerStates is every BMC's power, BMC 0 first: true is on.
func (p *Process) PowerStates(ctx context.Context) ([]bool, error) {
	line, err := p.ask(ctx, "states")
	if err != nil {
		return nil, err
	}
	digits, ok := strings.CutPrefix(line, "states ")
	if !ok || len(digits) != len(p.ports) {
		return nil, fmt.Errorf("bmcfarm: answer %q to states: want one digit per BMC (%d)", line, len(p.ports))
	}
	on := make([]bool, len(digits))
	for i := range digits {
		on[i] = digits[i] == '1'
	}
	return on, nil
}

// Close ends the farm: it closes the farm's stdin (Serve returns), and kills it if it
// has not exited within 5 s.
func (p *Process) Close() error {
	_ = p.in.Close()
	select {
	case <-p.done:
		return exitErr(p.waitErr)
	case <-time.After(5 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return errors.New("bmcfarm: the farm did not exit within 5 s of its stdin closing; killed")
}

func exitErr(err error) error {
	if err != nil {
		return fmt.Errorf("bmcfarm: the farm process: %w", err)
	}
	return nil
}
