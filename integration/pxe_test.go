package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// TestPXEBootRegisters is issue 5's proof (BIOS so far; see pxeFirmwares): a qemu VM on a bridge the test
// creates PXE-boot from Rivet's proxyDHCP (dnsmasq hands out the addresses, as a site's
// DHCP server would), load iPXE over Rivet's TFTP and the kernel and initramfs over HTTP,
// and the RAM agent registers: the recorded MAC is the VM's and the disk list holds the
// virtio disk with the serial given to qemu.
func TestPXEBootRegisters(t *testing.T) {
	testenvLong(t)
	for _, c := range []string{"qemu-system-x86_64", "dnsmasq"} {
		testenv.RequireCommand(t, c)
	}
	for _, f := range []string{"/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/snponly.efi", "/usr/share/ovmf/OVMF.fd"} {
		testenv.RequireFile(t, f)
	}
	lab := newNetLab(t, "10.232.70")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bootDir := buildBootDir(t, dir)

	// The site's DHCP server: dnsmasq on the bridge, addresses only, plus IPv6 router
	// advertisements (without them iPXE waits ~13 s for IPv6 autoconfiguration).
	lab.ip("-n", lab.lan, "addr", "add", "10.232.70.2/24", "dev", "br0")
	lab.ip("-n", lab.lan, "-6", "addr", "add", "fd00:232:70::2/64", "dev", "br0", "nodad")
	startDaemon(t, filepath.Join(dir, "dnsmasq.log"), "ip", "netns", "exec", lab.lan, "dnsmasq", "--keep-in-foreground",
		"--no-daemon", "--port=0", "--interface=br0", "--bind-interfaces", "--no-ping", "--log-dhcp",
		"--dhcp-range=10.232.70.100,10.232.70.150,255.255.255.0,10m", "--enable-ra",
		"--dhcp-range=fd00:232:70::,ra-only,64,10m", "--dhcp-leasefile="+filepath.Join(dir, "leases"),
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"))

	httpPort := freePort(t, lab.HostIP)
	cluster, err := coordinatortest.Start(ctx, coordinatortest.Options{Bin: bin("rivet"), Dir: filepath.Join(dir, "coord"),
		Nodes: 1, Host: lab.HostIP, ExtraArgs: []string{"--boot-mode", "proxy", "--boot-interface", "rvth" + lab.tag,
			"--boot-dir", bootDir, "--boot-cmdline", "console=tty0 console=ttyS0", "--boot-http-addr", fmt.Sprintf("%s:%d", lab.HostIP, httpPort)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("coordinator log:\n%s", tail(cluster.Logs(), 5000))
		}
	})
	admin := cluster.Client()
	for i, fw := range pxeFirmwares() {
		mac := fmt.Sprintf("52:54:00:70:00:%02x", i+1)
		serial := fmt.Sprintf("RVTDISK%d", i+1)
		began := time.Now()
		vm := startVM(t, lab, dir, fw, i, mac, serial)
		m := waitFor(t, ctx, 4*time.Minute, fw+" VM registered", func() (*shared.Machine, error) {
			if vm.exited() {
				return nil, fmt.Errorf("qemu exited; serial console:\n%s", tail(vm.console(), 3000))
			}
			ms, err := admin.Machines(ctx)
			if err != nil {
				return nil, err
			}
			for _, s := range ms {
				full, err := admin.Machine(ctx, s.ID)
				if err == nil && full.Inventory != nil && full.Inventory.HasMAC(mac) {
					return full, nil
				}
			}
			return nil, fmt.Errorf("no machine with MAC %s yet", mac)
		})
		fmt.Printf("rivet-figure: pxe firmware=%s qemu_start_to_registered_s=%.1f\n", fw, time.Since(began).Seconds())
		found := false
		for _, d := range m.Inventory.Disks {
			found = found || d.Serial == serial
		}
		if !found {
			t.Fatalf("%s VM's disks %+v lack the virtio disk with serial %s", fw, m.Inventory.Disks, serial)
		}
		if m.Agent.Mode != shared.ModeRAM {
			t.Fatalf("%s VM registered in %s mode, want ram", fw, m.Agent.Mode)
		}
		vm.stop()
	}
}

// buildBootDir builds the initramfs with this run's agent and gathers the iPXE binaries.
func buildBootDir(t *testing.T, dir string) string {
	t.Helper()
	boot := filepath.Join(dir, "boot")
	out, err := exec.Command(bin("rivet-mkinitramfs"), "--agent", bin("rivet-agent"), "--out", boot,
		"--kernel-cache", filepath.Join(repoRoot(), "build", "kernel")).CombinedOutput()
	if err != nil {
		t.Fatalf("rivet-mkinitramfs: %v\n%s", err, out)
	}
	if err := os.Rename(filepath.Join(boot, "initramfs.zst"), filepath.Join(boot, "initrd.zst")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"undionly.kpxe", "snponly.efi"} {
		data, err := os.ReadFile("/usr/lib/ipxe/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(boot, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return boot
}

type vmProc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	serial string
}

func (v *vmProc) exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

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

// startVM creates a tap on the lab's bridge and boots a TCG qemu VM from the network.
func startVM(t *testing.T, lab *netLab, dir, firmware string, i int, mac, serial string) *vmProc {
	t.Helper()
	tap := fmt.Sprintf("tap%d", i)
	lab.ip("-n", lab.lan, "tuntap", "add", "dev", tap, "mode", "tap")
	lab.ip("-n", lab.lan, "link", "set", tap, "master", "br0", "up")
	disk := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 256<<20); err != nil {
		t.Fatal(err)
	}
	serialLog := filepath.Join(dir, fmt.Sprintf("%s-serial.log", firmware))
	args := []string{"netns", "exec", lab.lan, "qemu-system-x86_64", "-accel", "tcg", "-m", "1024",
		"-display", "none", "-vga", "none", "-monitor", "none", "-serial", "file:" + serialLog, "-no-reboot",
		"-netdev", fmt.Sprintf("tap,id=n0,ifname=%s,script=no,downscript=no", tap),
		"-device", "virtio-rng-pci",
		"-drive", fmt.Sprintf("file=%s,if=none,id=d0,format=raw", disk),
		"-device", fmt.Sprintf("virtio-blk-pci,drive=d0,serial=%s", serial)}
	if firmware == "uefi" {
		args = append(args, "-machine", "q35", "-bios", "/usr/share/ovmf/OVMF.fd",
			"-device", fmt.Sprintf("virtio-net-pci,netdev=n0,mac=%s,bootindex=1", mac))
	} else {
		args = append(args, "-machine", "pc", "-boot", "n", "-fw_cfg", "name=etc/sercon-port,string=1016",
			"-device", fmt.Sprintf("virtio-net-pci,netdev=n0,mac=%s", mac))
	}
	cmd := exec.Command("ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	v := &vmProc{cmd: cmd, done: make(chan struct{}), serial: serialLog}
	go func() { _ = cmd.Wait(); close(v.done) }()
	t.Cleanup(func() {
		v.stop()
		if t.Failed() {
			t.Logf("%s qemu stderr: %s\nserial console:\n%s", firmware, stderr.String(), tail(v.console(), 3000))
		}
	})
	return v
}

// startDaemon runs a helper daemon for the test's life.
func startDaemon(t *testing.T, logPath, name string, args ...string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", name, tail(string(data), 3000))
		}
	})
}

func freePort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// pxeFirmwares is BIOS for now. UEFI (OVMF, native PXE → snponly.efi → iPXE) reaches the
// agent's kernel but does not yet register reliably under TCG here: run it by hand with
// RIVET_PXE_FIRMWARE=uefi while that is worked on (issue 5).
func pxeFirmwares() []string {
	if f := os.Getenv("RIVET_PXE_FIRMWARE"); f != "" {
		return []string{f}
	}
	return []string{"bios"}
}
