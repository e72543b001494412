package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// pxeMachine is one bare-metal stand-in: a MAC, a tap on the lab's bridge and a disk that
// keeps its content across power cycles. Each boot is a fresh qemu process (TCG, never
// KVM: see docs/lab-notes.md, "KVM is not assumed") with network first and the disk second, as a
// provisioned server is set up.
type pxeMachine struct {
	lab      *netLab
	dir      string
	firmware string // "bios" (SeaBIOS + the NIC's iPXE ROM) or "uefi" (OVMF's own PXE)
	mac      string
	serial   string // the disk's serial number, which the inventory must report
	disk     string
	tap      string
	sercon   string // fw_cfg file with SeaBIOS's serial console port
	boots    int
}

func newPXEMachine(t *testing.T, lab *netLab, dir, firmware string, i int, diskImage string) *pxeMachine {
	t.Helper()
	m := &pxeMachine{lab: lab, dir: dir, firmware: firmware,
		mac:    fmt.Sprintf("52:54:00:70:00:%02x", i+1),
		serial: fmt.Sprintf("RVTDISK%d%s", i+1, strings.ToUpper(firmware)),
		disk:   filepath.Join(dir, fmt.Sprintf("disk-%s.img", firmware)),
		tap:    fmt.Sprintf("tap%d", i)}
	diskCopy(t, diskImage, m.disk)
	// A little-endian 0x3f8 (COM1): SeaBIOS reads the file as a binary integer.
	m.sercon = filepath.Join(dir, "sercon-port.bin")
	diskWrite(t, m.sercon, []byte{0xf8, 0x03})
	lab.ip("-n", lab.lan, "tuntap", "add", "dev", m.tap, "mode", "tap")
	lab.ip("-n", lab.lan, "link", "set", m.tap, "master", "br0", "up")
	return m
}

// qemuArgs is the command line of one boot. The firmware tries the NIC first and the
// disk second: SeaBIOS by -boot order=nc, OVMF by bootindex. For UEFI the NIC has no
// option ROM (romfile=), so OVMF's own PXE client runs, fetches snponly.efi over TFTP
// and iPXE then runs on OVMF's network driver: the path of a real UEFI server. OVMF's
// IPv6 is off: its PXEv6 and HTTPv6 boot options would each wait ~70 s for a DHCPv6
// answer before the disk's turn comes.
func (m *pxeMachine) qemuArgs() []string {
	args := []string{"-accel", "tcg", "-cpu", power.LabCPU, "-m", "768", "-smp", "1",
		"-display", "none", "-vga", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-netdev", fmt.Sprintf("tap,id=n0,ifname=%s,script=no,downscript=no", m.tap),
		"-device", "virtio-rng-pci",
		"-drive", fmt.Sprintf("file=%s,if=none,id=d0,format=raw", m.disk)}
	if m.firmware == "uefi" {
		return append(args, "-machine", "q35", "-bios", "/usr/share/ovmf/OVMF.fd",
			"-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no",
			"-device", fmt.Sprintf("virtio-net-pci,netdev=n0,mac=%s,romfile=,bootindex=1", m.mac),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=d0,serial=%s,bootindex=2", m.serial))
	}
	// SeaBIOS (and the iPXE ROM through it) print on the serial port at sercon-port.
	return append(args, "-machine", "pc", "-boot", "order=nc", "-fw_cfg", "name=etc/sercon-port,file="+m.sercon,
		"-device", fmt.Sprintf("virtio-net-pci,netdev=n0,mac=%s", m.mac),
		"-device", fmt.Sprintf("virtio-blk-pci,drive=d0,serial=%s", m.serial))
}

// powerOn starts one boot; the VM is stopped in t.Cleanup if it still runs.
func (m *pxeMachine) powerOn(t *testing.T, phase string) *vmProc {
	t.Helper()
	m.boots++
	serialLog := filepath.Join(m.dir, fmt.Sprintf("%s-%d-%s-serial.log", m.firmware, m.boots, phase))
	return startQemu(t, m.lab.lan, serialLog, fmt.Sprintf("%s boot %d (%s)", m.firmware, m.boots, phase), m.qemuArgs())
}

// startQemu runs qemu-system-x86_64 with args in network namespace ns, its serial console
// (on stdio) stamped into serialLog; the VM is stopped in t.Cleanup if it still runs, and
// on failure its console is logged under label.
func startQemu(t *testing.T, ns, serialLog, label string, args []string) *vmProc {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "qemu-system-x86_64"}, args...)...)
	logf, err := os.Create(serialLog)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	v := &vmProc{done: make(chan struct{}), serial: serialLog, started: time.Now()}
	cmd.Stdout = &stampedLines{w: logf, start: v.started, bol: true}
	exited, err := testenv.StartTied(cmd, syscall.SIGKILL)
	if err != nil {
		t.Fatal(err)
	}
	v.cmd = cmd
	go func() { <-exited; logf.Close(); close(v.done) }()
	t.Cleanup(func() {
		v.stop()
		keepLog(t, serialLog)
		if t.Failed() {
			t.Logf("%s: qemu stderr: %s\nserial console without the kernel's lines:\n%s", label,
				stderr.String(), tail(withoutKernelLines(v.console()), 5000))
		}
	})
	return v
}

type vmProc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	serial  string
	started time.Time
}

func (v *vmProc) exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// console is what the VM printed on its serial port so far.
func (v *vmProc) console() string {
	data, _ := os.ReadFile(v.serial)
	return string(data)
}

func (v *vmProc) stop() {
	if !v.exited() {
		_ = v.cmd.Process.Kill()
		<-v.done
	}
}

// stampedLines prefixes every console line with the seconds since qemu started, which
// shows where a slow boot spends its time.
type stampedLines struct {
	w     io.Writer
	start time.Time
	bol   bool // at the beginning of a line
}

func (s *stampedLines) Write(p []byte) (int, error) {
	var b bytes.Buffer
	for _, c := range p {
		if s.bol {
			fmt.Fprintf(&b, "[%6.1fs] ", time.Since(s.start).Seconds())
		}
		b.WriteByte(c)
		s.bol = c == '\n'
	}
	if _, err := s.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// bootPhases reads a stamped console and says when each part of a PXE boot ended, in
// seconds since qemu started: the firmware's DHCP and iPXE's script fetch; the kernel and
// initramfs download with the kernel's self-decompression (the kernel's clock starts
// after it); the kernel's own start-up; the agent's first line. A mark the console lacks
// is "?". (The agent's "registered" line may come after the test has seen the record.)
func bootPhases(console string) string {
	marks := []struct {
		name, text  string
		kernelClock bool // less the kernel's own timestamp on the line: when its clock began
	}{
		{"script_s", "[script]", false}, {"kernel_start_s", "Run /init as init process", true},
		{"init_s", "Run /init as init process", false}, {"agent_s", "rivet: [1/6]", false}}
	var b strings.Builder
	for _, mark := range marks {
		at := "?"
		for line := range strings.Lines(console) {
			if !strings.Contains(line, mark.text) {
				continue
			}
			var wall, kernel float64
			if _, err := fmt.Sscanf(line, "[%fs]", &wall); err != nil {
				break
			}
			if mark.kernelClock {
				_, rest, _ := strings.Cut(line, "] ")
				if _, err := fmt.Sscanf(rest, "[%f]", &kernel); err != nil {
					break
				}
			}
			at = fmt.Sprintf("%.1f", wall-kernel)
			break
		}
		fmt.Fprintf(&b, " %s=%s", mark.name, at)
	}
	return strings.TrimSpace(b.String())
}

// withoutKernelLines drops the kernel's "[    1.234567] ..." lines: what is left is the
// firmware, iPXE and the agent.
func withoutKernelLines(console string) string {
	var b strings.Builder
	for line := range strings.Lines(console) {
		_, rest, _ := strings.Cut(line, "] ")
		if !strings.HasPrefix(rest, "[ ") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// kernelFragment is one kernel message as it lands on a stamped serial console: the
// kernel writes to the UART directly, so its line can cut into the middle of a line the
// agent is printing; the agent's line then goes on after it, behind a new stamp.
var kernelFragment = regexp.MustCompile(`\[ *\d+\.\d{6}\] [^\n]*\n(\[ *\d+\.\ds\] )?`)

// consoleStamp is the stamp stampedLines puts before every line.
var consoleStamp = regexp.MustCompile(`(?m)^\[ *\d+\.\ds\] `)

// agentText is a stamped console with the stamps and the kernel's messages taken out, so
// a line the agent printed reads whole even when a kernel message cut into it.
func agentText(console string) string {
	return consoleStamp.ReplaceAllString(kernelFragment.ReplaceAllString(console, ""), "")
}

// keepLog copies a log into $RIVET_PXE_LOGS, if set, for reading after the run.
func keepLog(t *testing.T, path string) {
	dir := os.Getenv("RIVET_PXE_LOGS")
	if dir == "" {
		return
	}
	data, err := os.ReadFile(path)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, filepath.Base(path)), data, 0o644)
	}
	if err != nil {
		t.Logf("keeping %s: %v", path, err)
	}
}

func TestBootPhasesReadsTheStampedConsole(t *testing.T) {
	console := `[   2.7s] 52-54-00-70-00-01.ipxe : 688 bytes [script]
[   3.2s] Probing EDD (edd=off to disable)... ok
[  10.2s] [    2.968310] Run /init as init process
[  10.7s] rivet: [1/6] system ready: kernel 6.1.0-57-amd64
[  12.6s] rivet: [4/6] registered as m-33476e92ee07ab64 (state discovered)
`
	want := "script_s=2.7 kernel_start_s=7.2 init_s=10.2 agent_s=10.7"
	if got := bootPhases(console); got != want {
		t.Errorf("bootPhases = %q, want %q", got, want)
	}
	if got := bootPhases("[   0.4s] SeaBIOS\n"); got != "script_s=? kernel_start_s=? init_s=? agent_s=?" {
		t.Errorf("bootPhases of a console without marks = %q", got)
	}
}

func TestAgentTextJoinsALineAKernelMessageCutInto(t *testing.T) {
	console := "[   3.1s] [    2.981234] virtio_net virtio0 eth0: renamed\r\n" +
		"[   4.0s] rivet: network: using eth1 (52:54[    3.874512] IPv6: ADDRCONF(NETDEV_CHANGE): eth1: link becomes ready\n" +
		"[   4.1s] :00:aa, PCI 0000:00:05.0): leased 10.232.72.9\n"
	want := "rivet: network: using eth1 (52:54:00:aa, PCI 0000:00:05.0): leased 10.232.72.9\n"
	if got := agentText(console); got != want {
		t.Fatalf("agentText =\n%q\nwant\n%q", got, want)
	}
}
