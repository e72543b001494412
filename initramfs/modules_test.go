package initramfs

import (
	"fmt"
	"strings"
	"testing"
)

// fakeModules is the virtio corner of Debian 6.1's module graph, as .modinfo states it.
var fakeModules = map[string]*module{
	"virtio_ring":           {Name: "virtio_ring", Path: "kernel/drivers/virtio/virtio_ring.ko"},
	"virtio":                {Name: "virtio", Path: "kernel/drivers/virtio/virtio.ko", Depends: []string{"virtio_ring"}},
	"virtio_pci_legacy_dev": {Name: "virtio_pci_legacy_dev", Path: "kernel/drivers/virtio/virtio_pci_legacy_dev.ko"},
	"virtio_pci_modern_dev": {Name: "virtio_pci_modern_dev", Path: "kernel/drivers/virtio/virtio_pci_modern_dev.ko"},
	"virtio_pci": {Name: "virtio_pci", Path: "kernel/drivers/virtio/virtio_pci.ko",
		Depends: []string{"virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"},
		Aliases: []string{"pci:v00001AF4d*sv*sd*bc*sc*i*"}},
	"failover":     {Name: "failover", Path: "kernel/net/core/failover.ko"},
	"net_failover": {Name: "net_failover", Path: "kernel/drivers/net/net_failover.ko", Depends: []string{"failover"}},
	"virtio_net": {Name: "virtio_net", Path: "kernel/drivers/net/virtio_net.ko",
		Depends: []string{"virtio_ring", "virtio", "net_failover"}, Aliases: []string{"virtio:d00000001v*"}},
	"nvme_core": {Name: "nvme_core", Path: "kernel/drivers/nvme/host/nvme-core.ko"},
	"nvme":      {Name: "nvme", Path: "kernel/drivers/nvme/host/nvme.ko", Depends: []string{"nvme_core"}},
}

func fakeSource(mods map[string]*module) moduleSource {
	return func(name string) (*module, error) {
		if m, ok := mods[name]; ok {
			return m, nil
		}
		return nil, fmt.Errorf("no module %s", name)
	}
}

func names(mods []*module) []string {
	var out []string
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out
}

func TestResolveModulesOrdersDependenciesFirst(t *testing.T) {
	set, err := resolveModules([]string{"virtio-net", "virtio_pci", "nvme", "virtio_pci"}, map[string]bool{"nvme": true}, fakeSource(fakeModules))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(names(set.Ordered), " ")
	want := "virtio_ring virtio failover net_failover virtio_net virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci"
	if got != want {
		t.Fatalf("load order\n got %s\nwant %s", got, want)
	}
	if strings.Join(set.Builtin, " ") != "nvme" {
		t.Fatalf("builtin = %v, want [nvme]", set.Builtin)
	}
	assertDepsFirst(t, set.Ordered)
}

func assertDepsFirst(t *testing.T, ordered []*module) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range ordered {
		pos[m.Name] = i
	}
	for i, m := range ordered {
		for _, d := range m.Depends {
			if p, ok := pos[d]; !ok || p >= i {
				t.Errorf("%s (at %d) depends on %s (at %d, present %v)", m.Name, i, d, p, ok)
			}
		}
	}
}

func TestResolveModulesErrors(t *testing.T) {
	if _, err := resolveModules([]string{"nope"}, nil, fakeSource(fakeModules)); err == nil {
		t.Error("unknown module resolved")
	}
	cyclic := map[string]*module{
		"a": {Name: "a", Depends: []string{"b"}},
		"b": {Name: "b", Depends: []string{"a"}},
	}
	_, err := resolveModules([]string{"a"}, nil, fakeSource(cyclic))
	if err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: err = %v", err)
	}
}

func TestModulesDepAndAlias(t *testing.T) {
	set, err := resolveModules([]string{"virtio_net", "virtio_pci"}, nil, fakeSource(fakeModules))
	if err != nil {
		t.Fatal(err)
	}
	dep := string(set.modulesDep())
	// modprobe loads the list back to front: ring, virtio, failover, net_failover.
	want := "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"
	if !strings.Contains(dep, want) {
		t.Errorf("modules.dep lacks\n%s\ngot:\n%s", want, dep)
	}
	if !strings.Contains(dep, "kernel/drivers/virtio/virtio_ring.ko:\n") {
		t.Errorf("modules.dep lacks a line for a module without dependencies:\n%s", dep)
	}
	alias := string(set.modulesAlias())
	for _, line := range []string{"alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n", "alias virtio:d00000001v* virtio_net\n"} {
		if !strings.Contains(alias, line) {
			t.Errorf("modules.alias lacks %q:\n%s", line, alias)
		}
	}
}

func TestParseModinfo(t *testing.T) {
	section := []byte("license=GPL\x00\x00\x00depends=virtio_ring,virtio\x00alias=virtio:d00000001v*\x00junk\x00=x\x00name=virtio_net\x00")
	keys, values := parseModinfo(section)
	got := map[string]string{}
	for i, k := range keys {
		got[k] = values[i]
	}
	if got["depends"] != "virtio_ring,virtio" || got["name"] != "virtio_net" || got["alias"] != "virtio:d00000001v*" || len(keys) != 4 {
		t.Fatalf("parseModinfo = %v", got)
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("depends=a,b\x00name=c\x00"))
	f.Add([]byte("\x00\x00=\x00=="))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, values := parseModinfo(data)
		if len(keys) != len(values) {
			t.Fatalf("%d keys, %d values", len(keys), len(values))
		}
		for _, k := range keys {
			if k == "" || strings.ContainsAny(k, "\x00=") {
				t.Fatalf("bad key %q", k)
			}
		}
	})
}
