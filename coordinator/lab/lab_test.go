package lab

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

func TestConfigNamesFitLinkLimit(t *testing.T) {
	c := Config{Name: "rvt123456", Dir: t.TempDir(), Machines: 90}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{c.bridge(), c.hostLink(), c.lanLink(), c.tap(90)} {
		if len(n) > 15 {
			t.Errorf("link name %q is longer than the kernel's 15 bytes", n)
		}
	}
	if err := (&Config{Name: "rvt1234567", Dir: "x"}).setDefaults(); err == nil {
		t.Error("a 10-character lab name was accepted")
	}
	if err := (&Config{Dir: "x", DiskGiB: 2}).setDefaults(); err == nil {
		t.Error("a 2 GiB disk was accepted")
	}
}

func TestMachinesDifferPerSubnet(t *testing.T) {
	a := Config{Dir: t.TempDir()}
	b := Config{Dir: t.TempDir(), Subnet: "10.232.81"}
	_ = a.setDefaults()
	_ = b.setDefaults()
	ma, mb := a.machine(1, "bios"), b.machine(1, "bios")
	if ma.MAC == mb.MAC || ma.UUID == mb.UUID {
		t.Fatalf("labs on two subnets share MAC or UUID: %s/%s vs %s/%s", ma.MAC, ma.UUID, mb.MAC, mb.UUID)
	}
	if _, err := net.ParseMAC(ma.MAC); err != nil {
		t.Fatal(err)
	}
	if a.firmwareOf(2) != "bios" {
		t.Fatal("default firmware is not bios")
	}
	mixed := Config{Firmware: "mixed"}
	if mixed.firmwareOf(1) != "bios" || mixed.firmwareOf(2) != "uefi" {
		t.Fatal("mixed firmware does not alternate BIOS first")
	}
}

func TestPhases(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := &Progress{Start: t0, Marks: map[string]time.Time{
		mRegistered: t0.Add(10 * time.Second), mPlanned: t0.Add(16 * time.Second),
		mImage: t0.Add(60 * time.Second), mReady: t0.Add(100 * time.Second)}}
	phases, total := p.Phases()
	got := []string{}
	for _, ph := range phases {
		got = append(got, ph.Name+"="+ph.Took.String())
	}
	if strings.Join(got, " ") != "pxe=10s plan=6s image=44s swarm=40s" || total != 100*time.Second {
		t.Fatalf("phases %v total %v", got, total)
	}
	// A VM that was past planning when Follow began: those phases are not timed.
	p.before = map[string]bool{mRegistered: true, mPlanned: true}
	phases, total = p.Phases()
	if len(phases) != 2 || phases[0].Name != "image" || total != 84*time.Second {
		t.Fatalf("with earlier milestones: %+v total %v", phases, total)
	}
}

func TestReached(t *testing.T) {
	m := &shared.Machine{State: shared.StateReady, Plan: &shared.Plan{},
		Steps: []shared.StepState{{Name: "disk", Status: shared.StepSucceeded}, {Name: "image", Status: shared.StepSkipped}}}
	if got := strings.Join(reached(m), ","); got != "registered,planned,disk,image,installed,ready" {
		t.Fatalf("reached %s", got)
	}
}

func TestRouterAdvertPacket(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:e8:50:01")
	b := routerAdvert(net.ParseIP("fd00:232:80::"), mac)
	if len(b) != 16+32+8 || b[0] != 134 || b[16] != 3 || b[17] != 4 || b[18] != 64 || b[19] != 0xc0 {
		t.Fatalf("router advertisement % x", b)
	}
	if !net.IP(b[32:48]).Equal(net.ParseIP("fd00:232:80::")) || net.HardwareAddr(b[50:56]).String() != mac.String() {
		t.Fatalf("prefix or link-layer address wrong: % x", b)
	}
	if b[6] != 0 || b[7] != 0 {
		t.Fatal("router lifetime is not 0: the lab must not offer itself as a default router")
	}
}
