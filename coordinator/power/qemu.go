package power

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Firmwares a qemu machine can have.
const (
	FirmwareBIOS = "bios" // SeaBIOS; the NIC's option ROM is iPXE
	FirmwareUEFI = "uefi" // OVMF with the machine's own copy of the variable store
)

// QEMUConfig is one VM's fixed hardware. A machine keeps it for life: the same MAC, UUID
// and disk on every power-on, as a server in a rack would.
type QEMUConfig struct {
	Name       string // VM name, for logs and the process title
	Dir        string // the machine's own directory: QMP socket, pid file, logs, UEFI vars
	MAC        string // of the virtio NIC
	Tap        string // tap interface, created by the caller (in Netns); "" is qemu's user network
	Netns      string // network namespace to run qemu in (the tap's); "" is the caller's
	Disk       string // disk image; qcow2 if the name ends in .qcow2, else raw
	DiskSerial string // the virtio disk's serial: what a role's install_disk names
	UUID       string // SMBIOS system UUID: the machine's identity for Rivet
	MemoryMiB  int    // default 1024
	Firmware   string // FirmwareBIOS (default) or FirmwareUEFI
	Binary     string // default qemu-system-x86_64
	OVMFCode   string // default /usr/share/OVMF/OVMF_CODE_4M.fd
	OVMFVars   string // template for the machine's vars; default /usr/share/OVMF/OVMF_VARS_4M.fd
	Logger     *slog.Logger
}

// QEMU is the power driver of one qemu VM, controlled over QMP. Its state lives in files
// under Dir (pid file, QMP socket, boot device), so a later process (`rivet lab down`)
// controls a VM an earlier one (`rivet lab up`) started. Power on means starting qemu in
// its own session, so that it outlives the process that started it.
type QEMU struct {
	cfg QEMUConfig
	log *slog.Logger
	mu  sync.Mutex // one power action at a time
}

var _ Driver = (*QEMU)(nil)

// NewQEMU checks cfg and returns the machine's driver. It starts nothing.
func NewQEMU(cfg QEMUConfig) (*QEMU, error) {
	if cfg.Name == "" || cfg.Dir == "" || cfg.MAC == "" || cfg.Disk == "" {
		return nil, errors.New("power: a qemu machine needs Name, Dir, MAC and Disk")
	}
	if cfg.Firmware == "" {
		cfg.Firmware = FirmwareBIOS
	}
	if cfg.Firmware != FirmwareBIOS && cfg.Firmware != FirmwareUEFI {
		return nil, fmt.Errorf("power: firmware %q: want bios or uefi", cfg.Firmware)
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 1024
	}
	if cfg.Binary == "" {
		cfg.Binary = "qemu-system-x86_64"
	}
	if cfg.OVMFCode == "" {
		cfg.OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	}
	if cfg.OVMFVars == "" {
		cfg.OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	return &QEMU{cfg: cfg, log: cfg.Logger.With("machine", cfg.Name)}, nil
}

// Files under Dir.
func (m *QEMU) qmpSocket() string  { return filepath.Join(m.cfg.Dir, "qmp.sock") }
func (m *QEMU) pidFile() string    { return filepath.Join(m.cfg.Dir, "qemu.pid") }
func (m *QEMU) bootFile() string   { return filepath.Join(m.cfg.Dir, "boot-device") }
func (m *QEMU) varsFile() string   { return filepath.Join(m.cfg.Dir, "OVMF_VARS.fd") }
func (m *QEMU) serconFile() string { return filepath.Join(m.cfg.Dir, "sercon-port") }

// SerialLog is the file the VM's serial console is appended to.
func (m *QEMU) SerialLog() string { return filepath.Join(m.cfg.Dir, "serial.log") }

// ProcessLog is qemu's own stdout and stderr.
func (m *QEMU) ProcessLog() string { return filepath.Join(m.cfg.Dir, "qemu.log") }

// Config returns the machine's hardware.
func (m *QEMU) Config() QEMUConfig { return m.cfg }

// PID returns the running qemu's process id, or 0 when the machine is off.
func (m *QEMU) PID() int {
	data, err := os.ReadFile(m.pidFile())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 || !m.isOurs(pid) {
		return 0
	}
	return pid
}

// isOurs reports whether pid is a live (not zombie) qemu serving this machine's QMP
// socket: pid files outlive processes, and pids are reused.
func (m *QEMU) isOurs(pid int) bool {
	if !ProcessAlive(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(cmdline, []byte(m.qmpSocket()))
}

// ProcessAlive reports whether pid exists and is not a zombie (a zombie has exited; only
// its parent has not collected it yet). The lab asks it of its other children too.
func ProcessAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses, which may itself hold ")".
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// Status reports whether the VM's process runs: qemu's power is on while it does.
func (m *QEMU) Status(context.Context) (State, error) {
	if m.PID() == 0 {
		return StateOff, nil
	}
	return StateOn, nil
}

// Guest reports the guest's state over QMP; a machine that is off says "off".
func (m *QEMU) Guest(ctx context.Context) (Status, error) {
	if m.PID() == 0 {
		return Status{Status: "off"}, nil
	}
	q, err := DialQMP(ctx, m.qmpSocket())
	if err != nil {
		return Status{}, err
	}
	defer q.Close()
	return q.QueryStatus(ctx)
}

// BootDevice returns the boot device chosen for the next power-on (default pxe).
func (m *QEMU) BootDevice() BootDevice {
	data, err := os.ReadFile(m.bootFile())
	if err != nil {
		return BootPXE
	}
	if dev := BootDevice(strings.TrimSpace(string(data))); dev.Validate() == nil {
		return dev
	}
	return BootPXE
}

// SetBootDevice records the boot order for the next power-on. A running qemu keeps the
// order it was started with; with pxe the boot services send installed machines to
// their disk anyway.
func (m *QEMU) SetBootDevice(_ context.Context, dev BootDevice) error {
	if err := dev.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(m.cfg.Dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(m.bootFile(), []byte(string(dev)+"\n"), 0o644)
}

// On starts qemu unless it runs, and returns once QMP reports the guest running.
func (m *QEMU) On(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.PID() != 0 {
		return nil
	}
	if err := m.prepare(); err != nil {
		return err
	}
	logf, err := os.OpenFile(m.ProcessLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := m.Args(m.BootDevice())
	name := m.cfg.Binary
	if m.cfg.Netns != "" {
		name, args = "ip", append([]string{"netns", "exec", m.cfg.Netns, m.cfg.Binary}, args...)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: a Ctrl-C at the terminal that powered the lab on does not power
	// the machine off, and the VM outlives `rivet lab up`.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("power on %s: %w", m.cfg.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	m.log.Info("powering on", "pid", cmd.Process.Pid, "firmware", m.cfg.Firmware, "boot", m.BootDevice())
	if err := m.waitRunning(ctx, done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("power on %s: %w", m.cfg.Name, err)
	}
	return nil
}

// prepare clears what a previous run left and gives a UEFI machine its variable store.
func (m *QEMU) prepare() error {
	if err := os.MkdirAll(m.cfg.Dir, 0o755); err != nil {
		return err
	}
	for _, f := range []string{m.qmpSocket(), m.pidFile()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if m.cfg.Firmware != FirmwareUEFI {
		// SeaBIOS reads the port as a little-endian integer of the fw_cfg file's bytes
		// (0x3f8 = COM1); "string=1016" would be read as the bytes of "1016".
		return os.WriteFile(m.serconFile(), []byte{0xf8, 0x03}, 0o644)
	}
	if _, err := os.Stat(m.varsFile()); err == nil {
		return nil // the machine's own NVRAM, kept across power cycles
	}
	return copyFile(m.cfg.OVMFVars, m.varsFile())
}

func (m *QEMU) waitRunning(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			return fmt.Errorf("qemu exited at start: %s", tailFile(m.ProcessLog(), 2000))
		case <-ctx.Done():
			return fmt.Errorf("qemu did not answer on %s: %w", m.qmpSocket(), ctx.Err())
		case <-tick.C:
		}
		if _, err := os.Stat(m.qmpSocket()); err != nil {
			continue
		}
		st, err := m.Guest(ctx)
		if err == nil && st.Running {
			return nil
		}
	}
}

// Off quits qemu (a power cut) and waits until the process is gone; a qemu that does not
// answer QMP is killed.
func (m *QEMU) Off(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	pid := m.PID()
	if pid == 0 {
		return nil
	}
	if q, err := DialQMP(ctx, m.qmpSocket()); err == nil {
		err = q.Quit(ctx)
		q.Close()
		if err == nil && waitGone(ctx, pid, 10*time.Second) {
			m.log.Info("powered off", "pid", pid)
			return nil
		}
	}
	m.log.Warn("qemu did not quit over QMP; killing it", "pid", pid)
	if err := sigkill(ctx, pid); err != nil {
		return fmt.Errorf("power off %s: %w", m.cfg.Name, err)
	}
	return nil
}

// Kill ends qemu with SIGKILL, without a word over QMP: the lab's way of pulling the plug
// in the middle of something.
func (m *QEMU) Kill(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	pid := m.PID()
	if pid == 0 {
		return nil
	}
	if err := sigkill(ctx, pid); err != nil {
		return fmt.Errorf("kill %s: %w", m.cfg.Name, err)
	}
	return nil
}

// sigkill ends process pid with SIGKILL and waits (up to 10 s) until it is gone; one
// already gone is no error.
func sigkill(ctx context.Context, pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	if !waitGone(ctx, pid, 10*time.Second) {
		return fmt.Errorf("qemu %d still runs after SIGKILL", pid)
	}
	return nil
}

// Cycle resets a running machine (the reset button) or powers a stopped one on.
func (m *QEMU) Cycle(ctx context.Context) error {
	if m.PID() == 0 {
		return m.On(ctx)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	q, err := DialQMP(ctx, m.qmpSocket())
	if err != nil {
		return fmt.Errorf("power cycle %s: %w", m.cfg.Name, err)
	}
	defer q.Close()
	return q.Reset(ctx)
}

// Powerdown presses the ACPI power button of a running machine (QMP system_powerdown):
// the guest's OS decides whether and when to shut down. A machine that is off is left so.
func (m *QEMU) Powerdown(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.PID() == 0 {
		return nil
	}
	q, err := DialQMP(ctx, m.qmpSocket())
	if err != nil {
		return fmt.Errorf("power button of %s: %w", m.cfg.Name, err)
	}
	defer q.Close()
	return q.Powerdown(ctx)
}

// waitGone polls until pid has exited (or is a zombie), at most max.
func waitGone(ctx context.Context, pid int, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !ProcessAlive(pid) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !ProcessAlive(pid)
}

// LabCPU is the lab VMs' CPU model: qemu's default, plus RDRAND, which every server CPU
// of the last decade has. Without it the kernel seeds its random number generator from
// CPU jitter, and the RAM agent waits on that before main (a dependency's package init
// reads crypto/rand): about 1.3 s of every PXE boot under TCG (measured), that no server
// spends.
const LabCPU = "qemu64,+rdrand"

// Args is qemu's command line for the next power-on with boot device dev.
func (m *QEMU) Args(dev BootDevice) []string {
	c := m.cfg
	format := "raw"
	if strings.HasSuffix(c.Disk, ".qcow2") {
		format = "qcow2"
	}
	// TCG, never KVM: the lab must run where /dev/kvm is missing or unusable (see
	// docs/lab-notes.md, "KVM is not assumed"), and the same command line must work everywhere.
	args := []string{"-name", c.Name + ",process=" + c.Name, "-accel", "tcg", "-cpu", LabCPU, "-smp", "1",
		"-m", strconv.Itoa(c.MemoryMiB), "-nodefaults", "-display", "none", "-vga", "none",
		"-chardev", "file,id=serial0,path=" + m.SerialLog() + ",append=on", "-serial", "chardev:serial0",
		"-qmp", "unix:" + m.qmpSocket() + ",server=on,wait=off", "-pidfile", m.pidFile(),
		// cache=unsafe: the host's page cache keeps what qemu wrote even when the VM is
		// killed, which is what a lab power cut needs; guest flushes cost TCG time.
		"-drive", "file=" + c.Disk + ",if=none,id=d0,format=" + format + ",cache=unsafe,discard=unmap",
		"-device", "virtio-rng-pci"}
	if c.Tap != "" {
		args = append(args, "-netdev", "tap,id=n0,ifname="+c.Tap+",script=no,downscript=no")
	} else {
		args = append(args, "-netdev", "user,id=n0,restrict=on")
	}
	if c.UUID != "" {
		args = append(args, "-uuid", c.UUID)
	}
	net, disk := "virtio-net-pci,netdev=n0,mac="+c.MAC, "virtio-blk-pci,drive=d0"
	if c.DiskSerial != "" {
		disk += ",serial=" + c.DiskSerial
	}
	if c.Firmware == FirmwareUEFI {
		if dev == BootDisk {
			disk += ",bootindex=1"
		} else {
			net, disk = net+",bootindex=1", disk+",bootindex=2"
		}
		// No IPv6 network boot options (PXE or HTTP): the lab and Rivet's boot services are
		// IPv4, and each such option costs the firmware a ~70-90 s timeout before the disk.
		return append(args, "-machine", "q35", "-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no",
			"-drive", "if=pflash,format=raw,readonly=on,file="+c.OVMFCode,
			"-drive", "if=pflash,format=raw,file="+m.varsFile(),
			"-device", net, "-device", disk)
	}
	order := "nc" // network, then the disk when iPXE gives up (installed machines)
	if dev == BootDisk {
		order = "c"
	}
	// SeaBIOS and iPXE print to the serial port only when told where it is.
	return append(args, "-machine", "pc", "-boot", "order="+order,
		"-fw_cfg", "name=etc/sercon-port,file="+m.serconFile(), "-device", net, "-device", disk)
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("%w (install the ovmf package for UEFI machines)", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// tailFile returns the end of a log file, for error messages.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return strings.TrimSpace(string(data))
}
