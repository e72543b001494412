package boot

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// What rivet-mkinitramfs writes for the virtio drivers (see initramfs.moduleSet).
const testModulesDep = `kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
`

const testModulesAlias = `# Aliases extracted from modules themselves.
alias virtio:d00000002v* virtio_blk
alias virtio:d00000001v* virtio_net
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000004v* virtio_rng
`

func testDB(t *testing.T) *moduleDB {
	t.Helper()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "modules.dep"), testModulesDep)
	write(t, filepath.Join(dir, "modules.alias"), testModulesAlias)
	db, err := openModuleDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestModuleDBMatchesModalias(t *testing.T) {
	db := testDB(t)
	for alias, want := range map[string]string{
		"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00": "virtio_pci",
		"virtio:d00000001v00001AF4":                             "virtio_net",
		"virtio:d00000004v00001AF4":                             "virtio_rng",
		"pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00": "",
	} {
		if got := strings.Join(db.match(alias), ","); got != want {
			t.Errorf("match(%s) = %q, want %q", alias, got, want)
		}
	}
}

func TestModuleDBLoadOrder(t *testing.T) {
	db := testDB(t)
	got := db.loadOrder([]string{"virtio_pci", "virtio_net", "virtio_blk", "builtin_thing"})
	want := []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
		"failover", "net_failover", "virtio_net", "virtio_blk"}
	if !slices.Equal(got, want) {
		t.Fatalf("load order\n got %v\nwant %v", got, want)
	}
}

func TestModuleDBRejectsMalformedIndex(t *testing.T) {
	db := &moduleDB{}
	if err := db.readDep(strings.NewReader("no colon here\n")); err == nil {
		t.Error("modules.dep without a colon accepted")
	}
	if err := db.readAlias(strings.NewReader("alias only-two\n")); err == nil {
		t.Error("short modules.alias line accepted")
	}
	if err := db.readAlias(strings.NewReader("alias pci:[ virtio_pci\n")); err == nil {
		t.Error("bad glob accepted")
	}
	if _, err := openModuleDB(t.TempDir()); err == nil || !strings.Contains(err.Error(), "rivet-mkinitramfs") {
		t.Errorf("missing index: err = %v, want a hint about rivet-mkinitramfs", err)
	}
}

// A fake sysfs with one virtio PCI device: the loader must want virtio_pci and its
// dependencies, and must skip modules /sys/module says are already loaded.
func TestDriverLoaderPicksModulesFromSysfs(t *testing.T) {
	db := testDB(t)
	sys := t.TempDir()
	write(t, filepath.Join(sys, "bus/pci/devices/0000:00:03.0/modalias"), "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n")
	write(t, filepath.Join(sys, "bus/pci/devices/0000:00:00.0/modalias"), "pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00\n")
	for _, m := range []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci"} {
		write(t, filepath.Join(sys, "module", m, "refcnt"), "0\n")
	}
	l := newDriverLoader(db, slog.New(slog.DiscardHandler))
	l.sysfs = sys
	if got := l.settle(); len(got) != 0 {
		t.Fatalf("settle loaded %v; every wanted module was already present", got)
	}
	for _, m := range []string{"virtio_ring", "virtio_pci"} {
		if !l.tried[m] {
			t.Errorf("%s was not considered", m)
		}
	}
	if l.tried["virtio_net"] {
		t.Error("virtio_net considered without a virtio network device")
	}
}

func FuzzModuleDB(f *testing.F) {
	f.Add(testModulesDep, testModulesAlias, "virtio:d00000001v00001AF4")
	f.Add("a.ko: b.ko\nb.ko: a.ko\n", "alias * a\n", "x")
	f.Fuzz(func(t *testing.T, dep, alias, modalias string) {
		db := &moduleDB{}
		if db.readDep(strings.NewReader(dep)) != nil || db.readAlias(strings.NewReader(alias)) != nil {
			return
		}
		order := db.loadOrder(db.match(modalias))
		seen := map[string]bool{}
		for _, m := range order {
			if seen[m] {
				t.Fatalf("%s twice in load order %v", m, order)
			}
			if _, ok := db.paths[m]; !ok {
				t.Fatalf("%s in load order but not in modules.dep", m)
			}
			seen[m] = true
		}
	})
}
