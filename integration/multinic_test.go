package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/agent/boot"
	"github.com/rivetmetal/rivet/coordinator/coordinatortest"
	"github.com/rivetmetal/rivet/coordinator/power"
	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/shared"
)

// The two NICs of the multi-NIC server. The other network's NIC sits on the lower PCI
// address, so that a search in PCI order tries it first.
const (
	multiBootMAC  = "52:54:00:72:00:01" // on the coordinator's boot LAN, PCI 00:05.0
	multiOtherMAC = "52:54:00:72:00:02" // on another DHCP network, PCI 00:04.0
	multiBoots    = 5
	multiRAMMiB   = 512
)

// TestMultiNICBoot is issue 20's proof. A two-NIC qemu VM: NIC 1 on the coordinator's
// boot LAN (Rivet's full DHCP and iPXE), NIC 2 on a second bridge that leads to another
// namespace where dnsmasq hands out addresses from another network, from which the
// coordinator cannot be reached.
//
//  1. no_bootif: a direct-kernel boot with the coordinator's kernel line less BOOTIF (and,
//     as a kernel line written by hand, an enrolment token instead of a boot ticket). The
//     agent tries NIC 2 first (lower PCI address), gets dnsmasq's lease, finds no
//     coordinator through it, releases it, and registers through NIC 1. It comes first:
//     an enrolment token registers new machines only.
//  2. bootif: five fresh PXE boots. Each registers, through NIC 1, and dnsmasq never
//     hears from NIC 2 (no request in its log from then on, no lease in its lease file):
//     the agent DHCPs the BOOTIF NIC only.
//  3. min_ram: a PXE boot with boot.MinimumRAMMiB of RAM (RIVET_MULTINIC_RAM_MIB=N boots
//     with N instead, to measure) registers and warns about low memory on the console.
//
// RIVET_PXE_LOGS=DIR keeps the serial consoles and dnsmasq's log.
func TestMultiNICBoot(t *testing.T) {
	s := startMultiNICSite(t)
	t.Run("no_bootif", s.bootWithoutBOOTIF)
	s.logMark = len(readFile(s.dnsmasq))
	registered := 0
	t.Run("bootif", func(t *testing.T) {
		for i := 1; i <= multiBoots; i++ {
			t.Run(fmt.Sprintf("boot%d", i), func(t *testing.T) {
				s.bootWithBOOTIF(t, multiRAMMiB)
				registered++ // not reached when the boot did not register
			})
		}
		fmt.Printf("rivet-figure: multinic bootif registered=%d/%d (fresh PXE boots, other NIC's DHCP answers too)\n", registered, multiBoots)
		if registered != multiBoots {
			t.Errorf("%d of %d boots registered", registered, multiBoots)
		}
		s.otherNetworkUntouched(t)
	})
	t.Run("min_ram", func(t *testing.T) {
		ram := boot.MinimumRAMMiB
		if v := os.Getenv("RIVET_MULTINIC_RAM_MIB"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("RIVET_MULTINIC_RAM_MIB=%q: want a number of MiB", v)
			}
			ram = n
		}
		console := s.bootWithBOOTIF(t, ram)
		fmt.Printf("rivet-figure: multinic min_ram qemu_m_mib=%d registered=1 %s\n", ram, memTotalLine(console))
		if !strings.Contains(agentText(console), "rivet: WARNING: low memory") {
			t.Errorf("a %d MiB boot shows no low-memory warning on the console", ram)
		}
	})
}

// multiNICSite is the boot LAN with one coordinator, the other DHCP network, and the VM's
// two taps, shared by every boot.
type multiNICSite struct {
	ctx        context.Context
	lab        *netLab
	dir        string
	bootDir    string
	admin      *shared.Client
	scriptURL  string // the coordinator's iPXE script for the boot NIC
	enrolToken string // for the kernel line of the boot that skips iPXE
	logMark    int    // dnsmasq's log up to here predates the BOOTIF boots
	dnsmasq    string // dnsmasq's log on the other network
	leases     string // and its lease file
	sercon     string
	boots      int
}

func startMultiNICSite(t *testing.T) *multiNICSite {
	testenvLong(t)
	for _, c := range []string{"qemu-system-x86_64", "dnsmasq"} {
		testenv.RequireCommand(t, c)
	}
	for _, f := range []string{"/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/snponly.efi"} {
		testenv.RequireFile(t, f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	s := &multiNICSite{ctx: ctx, lab: newNamedNetLab(t, "10.232.72", "rvtm"), dir: t.TempDir()}
	s.bootDir = buildBootDir(t, s.dir)
	s.sercon = filepath.Join(s.dir, "sercon-port.bin")
	diskWrite(t, s.sercon, []byte{0xf8, 0x03}) // COM1, little-endian, for SeaBIOS
	lab := s.lab
	lab.ip("-n", lab.lan, "tuntap", "add", "dev", "tapboot", "mode", "tap")
	lab.ip("-n", lab.lan, "link", "set", "tapboot", "master", "br0", "up")
	s.startOtherNetwork(t)

	// Without router advertisements iPXE waits ~13 s for IPv6 autoconfiguration.
	startDaemon(t, filepath.Join(s.dir, "router-adverts.log"), bin("rivet"), "lab", "router-adverts",
		"--interface", lab.HostIf, "--prefix", "fd00:232:72::/64")
	httpPort := freePort(t, lab.HostIP)
	cluster, err := coordinatortest.Start(ctx, coordinatortest.Options{Bin: bin("rivet"), Dir: filepath.Join(s.dir, "coord"),
		Nodes: 1, Host: lab.HostIP, ExtraArgs: []string{"--boot-mode", "full", "--boot-interface", lab.HostIf,
			"--boot-dir", s.bootDir, "--boot-http-addr", fmt.Sprintf("%s:%d", lab.HostIP, httpPort),
			"--boot-pool-start", "10.232.72.100", "--boot-pool-end", "10.232.72.150",
			"--boot-cmdline", "no_timer_check panic=-1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)
	t.Cleanup(func() {
		keepLog(t, s.dnsmasq)
		if t.Failed() {
			t.Logf("coordinator log (boot services):\n%s", tail(bootLines(cluster.Logs()), 4000))
		}
	})
	s.admin, s.enrolToken = cluster.Client(), cluster.EnrolToken
	s.scriptURL = fmt.Sprintf("http://%s:%d/boot/%s.ipxe", lab.HostIP, httpPort, strings.ReplaceAll(multiBootMAC, ":", "-"))
	return s
}

// startOtherNetwork builds NIC 2's network: a second bridge in the lab's namespace with
// the VM's second tap, and a veth from it to a namespace of its own where dnsmasq serves
// 10.233.72.0/24 with itself as the router. That namespace forwards nothing: the
// coordinator cannot be reached from there.
func (s *multiNICSite) startOtherNetwork(t *testing.T) {
	lab := s.lab
	ns := lab.name + "d" + lab.tag
	lab.record(lab.claim.Namespace(ns))
	lab.ip("netns", "add", ns)
	lab.ip("-n", ns, "link", "set", "lo", "up")
	lab.ip("-n", lab.lan, "link", "add", "br1", "type", "bridge")
	lab.ip("-n", lab.lan, "link", "set", "br1", "up")
	lab.ip("-n", lab.lan, "link", "add", "other0", "type", "veth", "peer", "name", "e0", "netns", ns)
	lab.ip("-n", lab.lan, "link", "set", "other0", "master", "br1", "up")
	lab.ip("-n", ns, "addr", "add", "10.233.72.1/24", "dev", "e0")
	lab.ip("-n", ns, "link", "set", "e0", "up")
	lab.ip("-n", lab.lan, "tuntap", "add", "dev", "tapother", "mode", "tap")
	lab.ip("-n", lab.lan, "link", "set", "tapother", "master", "br1", "up")
	s.dnsmasq, s.leases = filepath.Join(s.dir, "dnsmasq-other.log"), filepath.Join(s.dir, "dnsmasq-other.leases")
	startDaemon(t, s.dnsmasq, "ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--no-daemon",
		"--port=0", "--interface=e0", "--bind-interfaces", "--no-ping", "--log-dhcp", "--dhcp-authoritative",
		"--dhcp-range=10.233.72.100,10.233.72.150,255.255.255.0,10m", "--dhcp-leasefile="+s.leases,
		"--pid-file="+filepath.Join(s.dir, "dnsmasq-other.pid"))
}

// vmArgs is one boot's qemu command line: network boot through NIC 1's iPXE ROM (NIC 2
// has none), or a direct-kernel boot with kernelLine.
func (s *multiNICSite) vmArgs(ramMiB int, kernelLine string) []string {
	args := []string{"-accel", "tcg", "-cpu", power.LabCPU, "-m", strconv.Itoa(ramMiB), "-smp", "1",
		"-machine", "pc", "-display", "none", "-vga", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-device", "virtio-rng-pci",
		"-netdev", "tap,id=other,ifname=tapother,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=other,mac=" + multiOtherMAC + ",addr=0x4,romfile=",
		"-netdev", "tap,id=boot,ifname=tapboot,script=no,downscript=no",
		// The boot LAN is the slower one: qemu holds its packets up to 20 ms each way, so
		// that the other network's DHCP server answers first (netem is not on this kernel).
		"-object", "filter-buffer,id=slow,netdev=boot,queue=all,interval=20000",
		"-device", "virtio-net-pci,netdev=boot,mac=" + multiBootMAC + ",addr=0x5,bootindex=1"}
	if kernelLine == "" {
		return append(args, "-boot", "order=n", "-fw_cfg", "name=etc/sercon-port,file="+s.sercon)
	}
	return append(args, "-kernel", filepath.Join(s.bootDir, "vmlinuz"), "-initrd", filepath.Join(s.bootDir, "initrd.zst"),
		"-append", kernelLine)
}

// bootUntilRegistered starts a fresh VM and waits until its agent has registered in
// this boot; it returns the console.
func (s *multiNICSite) bootUntilRegistered(t *testing.T, label string, ramMiB int, kernelLine string) string {
	t.Helper()
	s.boots++
	serial := filepath.Join(s.dir, fmt.Sprintf("multinic-%d-%s-serial.log", s.boots, label))
	vm := startQemu(t, s.lab.lan, serial, label, s.vmArgs(ramMiB, kernelLine))
	defer vm.stop()
	var rec *shared.Machine
	testenv.Eventually(t, 2*time.Minute, label+" registered", func() error {
		if vm.exited() {
			return errors.New("qemu exited")
		}
		if !strings.Contains(agentText(vm.console()), "rivet: [4/6] registered as") {
			return errors.New("no registration on the console yet")
		}
		m, err := s.machine()
		if err != nil {
			return err
		}
		if m.Agent.LastSeen.Before(vm.started) {
			return fmt.Errorf("the coordinator last heard from the machine at %s, before this boot", m.Agent.LastSeen)
		}
		rec = m
		return nil
	})
	if !strings.HasPrefix(rec.Addr, "10.232.72.") {
		t.Errorf("the agent spoke from %q, not from the boot LAN 10.232.72.0/24", rec.Addr)
	}
	fmt.Printf("rivet-figure: multinic %s seconds=%.1f ram_mib=%d (qemu start to registered, TCG)\n", label, time.Since(vm.started).Seconds(), ramMiB)
	return vm.console()
}

// machine is the coordinator's record of the VM.
func (s *multiNICSite) machine() (*shared.Machine, error) {
	ms, err := s.admin.Machines(s.ctx)
	if err != nil {
		return nil, err
	}
	for _, sum := range ms {
		full, err := s.admin.Machine(s.ctx, sum.ID)
		if err == nil && full.Inventory != nil && full.Inventory.HasMAC(multiBootMAC) {
			return full, nil
		}
	}
	return nil, fmt.Errorf("no machine with MAC %s", multiBootMAC)
}

// bootWithBOOTIF network-boots the VM (the coordinator's script passes BOOTIF) and checks
// the agent used NIC 1 because of it.
func (s *multiNICSite) bootWithBOOTIF(t *testing.T, ramMiB int) string {
	console := s.bootUntilRegistered(t, "bootif", ramMiB, "")
	want := fmt.Sprintf("(%s, PCI 0000:00:05.0): the NIC the machine booted from (BOOTIF=%s)", multiBootMAC, multiBootMAC)
	if !strings.Contains(agentText(console), want) {
		t.Errorf("the console does not say the agent chose NIC 1 for BOOTIF (%q)", want)
	}
	if ramMiB >= 2*boot.MinimumRAMMiB && strings.Contains(agentText(console), "WARNING: low memory") {
		t.Errorf("a %d MiB boot warns about low memory", ramMiB)
	}
	return console
}

// otherNetworkUntouched checks that dnsmasq never heard from NIC 2 during the BOOTIF boots.
func (s *multiNICSite) otherNetworkUntouched(t *testing.T) {
	log := readFile(s.dnsmasq)
	if !strings.Contains(log, "DHCP, IP range 10.233.72.100") {
		t.Fatalf("dnsmasq on the other network did not start:\n%s", log)
	}
	for line := range strings.Lines(log[min(s.logMark, len(log)):]) {
		if strings.Contains(strings.ToLower(line), multiOtherMAC) {
			t.Errorf("dnsmasq heard from NIC 2 although BOOTIF named NIC 1: %s", strings.TrimSpace(line))
		}
	}
	if ip := leasedIP(s.leases, multiOtherMAC); ip != "" {
		t.Errorf("NIC 2 holds dnsmasq's lease %s", ip)
	}
}

// bootWithoutBOOTIF boots the kernel directly with the coordinator's kernel line less
// BOOTIF, as an iPXE that does not pass it would.
func (s *multiNICSite) bootWithoutBOOTIF(t *testing.T) {
	line := s.kernelLine(t)
	if strings.Contains(line, "BOOTIF") {
		t.Fatalf("kernel line still has BOOTIF: %s", line)
	}
	console := s.bootUntilRegistered(t, "no-bootif", multiRAMMiB, line)
	for _, want := range []string{
		"network: no BOOTIF on the kernel command line",
		fmt.Sprintf("network: not using eth0 (%s, PCI 0000:00:04.0): leased 10.233.72.", multiOtherMAC),
		"(released) but the coordinator does not answer through it",
		fmt.Sprintf("network: using eth1 (%s, PCI 0000:00:05.0): leased 10.232.72.", multiBootMAC),
	} {
		if !strings.Contains(agentText(console), want) {
			t.Errorf("the console lacks %q", want)
		}
	}
	fmt.Printf("rivet-figure: multinic no_bootif search_s=%s (first network line to the NIC chosen, TCG)\n",
		between(console, "network: no BOOTIF", "network: using "))
	log := readFile(s.dnsmasq)
	for _, want := range []string{"DHCPACK(e0)", "DHCPRELEASE(e0)"} {
		if !strings.Contains(log, want) || !containsLine(log, want, multiOtherMAC) {
			t.Errorf("dnsmasq's log has no %s for NIC 2 (%s)", want, multiOtherMAC)
		}
	}
	if ip := leasedIP(s.leases, multiOtherMAC); ip != "" {
		t.Errorf("NIC 2 still holds dnsmasq's lease %s after the agent chose NIC 1", ip)
	}
}

// kernelLine is the agent's kernel command line from the coordinator's iPXE script for
// the boot NIC, without BOOTIF.
func (s *multiNICSite) kernelLine(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(s.scriptURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	script, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(script)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "kernel" {
			continue
		}
		var keep []string
		for _, arg := range f[2:] { // f[1] is the kernel's URL
			if arg == "||" {
				break
			}
			if !strings.HasPrefix(arg, "BOOTIF=") {
				keep = append(keep, arg)
			}
		}
		// The script was fetched by the test, not by the machine, so it carries no boot
		// ticket: a kernel line written by hand uses an enrolment token instead.
		keep = append(keep, shared.CmdlineToken+"="+s.enrolToken)
		return strings.Join(keep, " ")
	}
	t.Fatalf("no kernel line in the coordinator's script:\n%s", script)
	return ""
}

// containsLine reports whether one line of text holds both a and b (b in any case).
func containsLine(text, a, b string) bool {
	for line := range strings.Lines(text) {
		if strings.Contains(line, a) && strings.Contains(strings.ToLower(line), b) {
			return true
		}
	}
	return false
}

// between is the seconds between the stamped console lines holding from and to, or "?".
func between(console, from, to string) string {
	at := func(text string) (float64, bool) {
		for line := range strings.Lines(console) {
			var s float64
			if strings.Contains(line, text) {
				_, err := fmt.Sscanf(line, "[%fs]", &s)
				return s, err == nil
			}
		}
		return 0, false
	}
	a, ok1 := at(from)
	b, ok2 := at(to)
	if !ok1 || !ok2 {
		return "?"
	}
	return fmt.Sprintf("%.1f", b-a)
}

// memTotalLine is the kernel's memory line ("Memory: 93012K/130552K available ...").
func memTotalLine(console string) string {
	for line := range strings.Lines(console) {
		if _, rest, ok := strings.Cut(line, "Memory: "); ok && strings.Contains(rest, "available") {
			k, _, _ := strings.Cut(rest, " ")
			return "kernel_memory=" + k
		}
	}
	return "kernel_memory=?"
}
