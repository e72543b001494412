package testenv

import (
	"os/exec"
	"runtime"
	"syscall"
)

// StartTied starts cmd so that the kernel sends it sig when the test binary dies, even
// killed before its cleanups run, and returns a channel that receives cmd.Wait's result.
// The caller must not call cmd.Wait itself.
//
// Pdeathsig fires when the thread that forked the child ends, not the process. Go ends a
// thread when a goroutine locked to it returns (the namespace helpers do so on purpose),
// and that can be any thread that earlier forked a child: the child is then SIGKILLed in
// the middle of a test (seen as a healthy coordinator that suddenly refuses connections).
// So the fork happens on a thread locked to a goroutine that waits for the child: the
// thread lives exactly as long as the child needs it.
func StartTied(cmd *exec.Cmd, sig syscall.Signal) (<-chan error, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = sig
	started, exited := make(chan error, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread() // after Wait: the child no longer needs the thread
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return exited, nil
}
