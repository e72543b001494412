package testenv

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// The trap StartTied avoids: a child whose forking thread ends is killed although the
// test binary lives on. A locked goroutine that happens to run on the main thread wedges
// it instead of ending it (the runtime never ends the main thread), so the child lives:
// that can happen once, after which the main thread is never free again, hence two tries.
func TestPdeathsigFiresWhenTheForkingThreadEnds(t *testing.T) {
	RequireCommand(t, "sleep")
	for try := 1; try <= 2; try++ {
		cmd := exec.Command("sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		started := make(chan error)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
			started <- cmd.Start()
		}()
		if err := <-started; err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("sleep ended with %v, want SIGKILL", err)
			}
			return
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Logf("try %d: the child outlived its forking goroutine (it ran on the main thread, which is wedged, not ended)", try)
		}
	}
	t.Fatal("the child outlived its forking thread twice: Pdeathsig no longer fires per thread")
}

func TestStartTiedSurvivesEndingThreads(t *testing.T) {
	RequireCommand(t, "sleep")
	cmd := exec.Command("sleep", "60")
	exited, err := StartTied(cmd, syscall.SIGKILL)
	if err != nil {
		t.Fatal(err)
	}
	// Threads that end, as the namespace helpers' do; Go may pick any idle thread for them.
	for range 50 {
		done := make(chan struct{})
		go func() { runtime.LockOSThread(); close(done) }()
		<-done
	}
	select {
	case err := <-exited:
		t.Fatalf("the tied child died while the test lives: %v", err)
	case <-time.After(500 * time.Millisecond): // nothing to wait for: a death would be prompt
	}
	_ = cmd.Process.Kill()
	if err := <-exited; err == nil {
		t.Fatal("Wait's result after a kill is nil")
	}
}
