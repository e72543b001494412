package boot

import (
	"net"
	"strings"
	"testing"
)

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseBootIF(t *testing.T) {
	for _, tc := range []struct {
		cmdline, want string // want "" with wantErr false: absent
		wantErr       bool
	}{
		{"console=ttyS0 BOOTIF=01-52-54-00-70-00-01 rivet.url=https://c:8443", "52:54:00:70:00:01", false},
		{"BOOTIF=01-52-54-00-AB-CD-EF", "52:54:00:ab:cd:ef", false}, // iPXE may print upper case
		{"BOOTIF=52:54:00:ab:cd:ef", "", true},                      // no hardware type
		{"BOOTIF=01-52:54:00:ab:cd:ef", "", true},
		{"BOOTIF=01-52-54-00-00-00-01 BOOTIF=01-52-54-00-00-00-02", "52:54:00:00:00:02", false},
		{"console=ttyS0 rivet.url=https://c:8443", "", false},
		{"XBOOTIF=01-52-54-00-00-00-01", "", false},
		{"BOOTIF=06-52-54-00-00-00-01", "", true}, // token ring: not ours
		{"BOOTIF=01-52-54-00-00-00", "", true},
		{"BOOTIF=", "", true},
		{"BOOTIF=01-52-54-00-00-00-zz", "", true},
		{"BOOTIF=20-00-00-00-00-00-00-00-00-00-00-00-00-00-00-00-00-00-00-00-00", "", true}, // InfiniBand
	} {
		got, err := parseBootIF(tc.cmdline)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseBootIF(%q) error %v, want error %v", tc.cmdline, err, tc.wantErr)
			continue
		}
		if err == nil && got.String() != tc.want {
			t.Errorf("parseBootIF(%q) = %q, want %q", tc.cmdline, got, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "BOOTIF=") {
			t.Errorf("parseBootIF(%q) error %q does not name the parameter", tc.cmdline, err)
		}
	}
}

func FuzzParseBootIF(f *testing.F) {
	for _, s := range []string{"BOOTIF=01-52-54-00-70-00-01", "BOOTIF=52:54:00:ab:cd:ef", "BOOTIF=01-", "a BOOTIF= b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmdline string) {
		mac, err := parseBootIF(cmdline)
		if err == nil && mac != nil && len(mac) != 6 {
			t.Errorf("parseBootIF(%q) = %v: not an Ethernet address", cmdline, mac)
		}
		if err != nil && mac != nil {
			t.Errorf("parseBootIF(%q) returned both %v and %v", cmdline, mac, err)
		}
	})
}

func TestNICOrder(t *testing.T) {
	// As a two-port server shows them: the kernel's names do not follow the slots.
	nics := []nicDevice{
		{Name: "eth0", MAC: mustMAC(t, "52:54:00:00:00:0a"), PCI: "0000:00:10.0"},
		{Name: "eth1", MAC: mustMAC(t, "52:54:00:00:00:0b"), PCI: "0000:00:03.0"},
		{Name: "usb0", MAC: mustMAC(t, "52:54:00:00:00:0c")},
		{Name: "eth2", MAC: mustMAC(t, "52:54:00:00:00:0d"), PCI: "0000:02:00.0"},
		{Name: "enx1", MAC: mustMAC(t, "52:54:00:00:00:0e")},
	}
	names := func(ns []nicDevice) string { return joinNames(ns) }
	if got, want := names(nicOrder(nics, nil)), "eth1, eth0, eth2, enx1, usb0"; got != want {
		t.Errorf("order without BOOTIF = %s, want %s (lowest PCI address first, then off-PCI by name)", got, want)
	}
	if got := names(nicOrder(nics, mustMAC(t, "52:54:00:00:00:0a"))); got != "eth0" {
		t.Errorf("order with BOOTIF of eth0 = %s, want eth0 alone", got)
	}
	if got := nicOrder(nics, mustMAC(t, "52:54:00:00:00:99")); len(got) != 0 {
		t.Errorf("order with a BOOTIF no NIC has = %s, want none (never another NIC)", names(got))
	}
	if got := names(nicOrder(nicOrder(nics, nil), nil)); got != names(nicOrder(nics, nil)) {
		t.Errorf("nicOrder is not stable: %s", got)
	}
}

func TestPCIOf(t *testing.T) {
	for path, want := range map[string]string{
		"/sys/devices/pci0000:00/0000:00:03.0/virtio0":                "0000:00:03.0",
		"/sys/devices/pci0000:00/0000:00:1c.0/0000:02:00.1":           "0000:02:00.1",
		"/sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0":       "0000:00:14.0",
		"/sys/devices/platform/vhost/net0":                            "",
		"/sys/devices/pci0000:00/0000:00:1C.0/0000:03:00.0/virtio3/x": "0000:03:00.0",
	} {
		if got := pciOf(path); got != want {
			t.Errorf("pciOf(%s) = %q, want %q", path, got, want)
		}
	}
}

func TestCoordinatorAddrs(t *testing.T) {
	got, err := coordinatorAddrs([]string{"https://10.0.0.10:7443", "https://coord.example", "http://[fd00::1]"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "10.0.0.10:7443 coord.example:443 [fd00::1]:80"; strings.Join(got, " ") != want {
		t.Errorf("coordinatorAddrs = %v, want %s", got, want)
	}
	if _, err := coordinatorAddrs([]string{"https://"}); err == nil {
		t.Errorf("a URL without a host was accepted")
	}
}
