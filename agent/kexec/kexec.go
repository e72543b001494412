//go:build linux

// Package kexec boots a re-imaged machine from its installed OS straight into the Rivet
// RAM agent: the kernel, initramfs and command line come from a coordinator over the API
// (TLS pinned by the cluster CA, the machine's own token), the files from its boot HTTP
// server, each checked against the digest the API gave before the kernel loads them.
// kexec skips the firmware's POST, which on a server is minutes.
package kexec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/shared"
)

// ErrLoad wraps a kernel's refusal to load the files (no KEXEC_FILE, lockdown): the one
// failure a reboot through the firmware can stand in for.
var ErrLoad = errors.New("the kernel cannot kexec")

// Loader loads a kernel and initramfs to kexec into and starts it.
type Loader struct {
	Client *shared.Client // the machine's API client (its token)
	HTTP   *http.Client   // fetches the boot files; nil: a client with a 5-minute timeout
	Logger *slog.Logger
	// Exec starts the loaded kernel; nil: sync and reboot(LINUX_REBOOT_CMD_KEXEC).
	Exec func() error
}

// Boot asks for machine id's RAM agent boot, fetches and checks both files and kexecs.
// It returns only on an error: on success the machine is running the new kernel.
func (l *Loader) Boot(ctx context.Context, id shared.MachineID) error {
	k, err := l.Client.Kexec(ctx, id)
	if err != nil {
		return fmt.Errorf("asking for the agent's kexec boot: %w", err)
	}
	if err := k.Validate(); err != nil {
		return err
	}
	kernel, err := l.fetch(ctx, "kernel", k.Kernel)
	if err != nil {
		return err
	}
	defer kernel.Close()
	initrd, err := l.fetch(ctx, "initrd", k.Initrd)
	if err != nil {
		return err
	}
	defer initrd.Close()
	if err := unix.KexecFileLoad(int(kernel.Fd()), int(initrd.Fd()), k.Cmdline, 0); err != nil {
		return fmt.Errorf("%w: kexec_file_load: %v (a kernel without KEXEC_FILE, or lockdown under secure boot)", ErrLoad, err)
	}
	l.Logger.Info("kexec: the Rivet agent's kernel is loaded; starting it", "kernel", k.Kernel.URL, "bytes", k.Kernel.Size+k.Initrd.Size)
	if l.Exec != nil {
		return l.Exec()
	}
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_KEXEC)
}

// fetch downloads f into an anonymous in-memory file and checks its size and digest.
func (l *Loader) fetch(ctx context.Context, name string, f shared.BootFile) (*os.File, error) {
	fd, err := unix.MemfdCreate("rivet-kexec-"+name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd for the %s: %w", name, err)
	}
	out := os.NewFile(uintptr(fd), "rivet-kexec-"+name)
	if err := l.download(ctx, f, out); err != nil {
		out.Close()
		return nil, fmt.Errorf("kexec %s from %s: %w", name, f.URL, err)
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}

func (l *Loader) download(ctx context.Context, f shared.BootFile, out io.Writer) error {
	hc := l.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Minute}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(resp.Body, f.Size+1))
	if err != nil {
		return err
	}
	if n != f.Size {
		return fmt.Errorf("got %d bytes, the coordinator said %d", n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("sha256 %s, the coordinator said %s: not loading it", got, f.SHA256)
	}
	return nil
}
