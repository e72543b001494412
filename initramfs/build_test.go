package initramfs

import (
	"bytes"
	"context"
	"debug/elf"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/rivetmetal/rivet/internal/testenv"
)

// testKernel fetches (or reuses) Debian's kernel package in the repository's build cache.
func testKernel(t *testing.T) Kernel {
	t.Helper()
	testenv.RequireCommand(t, "apt-get")
	testenv.RequireCommand(t, "dpkg-deb")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := FetchKernel(ctx, testLog(t), filepath.Join(testenv.RepoRoot(t), "build", "kernel"))
	if err != nil {
		testenv.Missing(t, "Debian kernel package: %v", err)
	}
	return k
}

// fakeAgent is a stand-in /init: the archive layout does not care what the binary is.
func fakeAgent(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rivet-agent")
	data := bytes.Repeat([]byte("rivet-agent stand-in\n"), 50000)
	if err := os.WriteFile(p, data, 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildIsReproducibleAndComplete(t *testing.T) {
	kernel := testKernel(t)
	agent := fakeAgent(t)
	ctx := context.Background()
	build := func(dir string) Result {
		t.Helper()
		start := time.Now()
		res, err := Build(ctx, Spec{Agent: agent, Kernel: kernel, OutDir: dir, Log: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("build into %s: %s (reused %v)", dir, time.Since(start).Round(time.Millisecond), res.Reused)
		return res
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := build(dirA), build(dirB)
	if a.Reused || b.Reused {
		t.Fatal("fresh output directories reported reused builds")
	}
	if a.SHA256 != b.SHA256 || sha256File(t, a.InitramfsPath) != sha256File(t, b.InitramfsPath) {
		t.Fatalf("two builds differ: %s vs %s", a.SHA256, b.SHA256)
	}
	if again := build(dirA); !again.Reused || again.SHA256 != a.SHA256 {
		t.Fatalf("rebuild with unchanged inputs: reused=%v sha %s, want reused and %s", again.Reused, again.SHA256, a.SHA256)
	}
	if sha256File(t, a.KernelPath) != a.KernelSHA256 || a.KernelSize < 1<<20 {
		t.Fatalf("vmlinuz copy: size %d, sha mismatch", a.KernelSize)
	}

	entries := readBack(t, a.InitramfsPath)
	byName := map[string]archived{}
	for _, e := range entries {
		byName[e.Name] = e
	}
	if init, ok := byName["init"]; !ok || init.Mode != modeRegular|0o755 || !bytes.Equal(init.Data, mustRead(t, agent)) {
		t.Fatal("/init is missing, not executable, or not the agent binary")
	}
	if c := byName["dev/console"]; c.Mode != modeCharDev|0o600 || c.RdevMajor != 5 || c.RdevMinor != 1 {
		t.Fatalf("dev/console: %+v", c.Mode)
	}
	if _, ok := byName["usr/share/misc/pci.ids"]; !ok {
		t.Fatal("pci.ids missing")
	}
	base := "lib/modules/" + kernel.Release
	for _, f := range []string{"modules.dep", "modules.alias", "modules.builtin"} {
		if len(byName[path.Join(base, f)].Data) == 0 {
			t.Fatalf("%s/%s missing or empty", base, f)
		}
	}
	checkModules(t, byName, base, a.Modules)
	checkVirtioPCIDep(t, string(byName[path.Join(base, "modules.dep")].Data))
	checkWithGNUCpio(t, a.InitramfsPath, len(entries))

	t.Logf("modules (%d): %s", len(a.Modules), strings.Join(a.Modules, " "))
	t.Logf("rivet-figure: initramfs size_mb=%.2f archive_mb=%.2f modules=%d (fake 1 MB /init; goal <= 25 MB)",
		float64(a.CompressedSize)/(1<<20), float64(a.ArchiveSize)/(1<<20), len(a.Modules))
}

// checkModules proves the closure and order from the shipped .ko files themselves: every
// wanted driver is there, and every module's .modinfo dependencies are in the archive and
// come earlier in the load order.
func checkModules(t *testing.T, byName map[string]archived, base string, order []string) {
	t.Helper()
	for _, want := range DefaultModules {
		if !slices.Contains(order, want) {
			t.Errorf("wanted module %s missing from the load order", want)
		}
	}
	pos := map[string]int{}
	for i, m := range order {
		pos[m] = i
	}
	kos := 0
	for name, e := range byName {
		if !strings.HasPrefix(name, base+"/kernel/") || !strings.HasSuffix(name, ".ko") {
			continue
		}
		kos++
		f, err := elf.NewFile(bytes.NewReader(e.Data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		data, err := f.Section(".modinfo").Data()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var self string
		var deps []string
		keys, values := parseModinfo(data)
		for i, k := range keys {
			switch k {
			case "name":
				self = modName(values[i])
			case "depends":
				for _, d := range strings.Split(values[i], ",") {
					if d != "" {
						deps = append(deps, modName(d))
					}
				}
			}
		}
		for _, d := range deps {
			if pos[d] >= pos[self] || !slices.Contains(order, d) {
				t.Errorf("%s needs %s first (positions %d, %d)", self, d, pos[d], pos[self])
			}
		}
	}
	if kos != len(order) {
		t.Errorf("archive has %d .ko files, load order lists %d modules", kos, len(order))
	}
}

// checkVirtioPCIDep reads modules.dep the way modprobe does (dependencies back to front)
// and checks the order the qemu probe found by hand: virtio_ring, virtio, the two
// virtio_pci_*_dev helpers, then virtio_pci.
func checkVirtioPCIDep(t *testing.T, dep string) {
	t.Helper()
	for _, line := range strings.Split(dep, "\n") {
		mod, rest, _ := strings.Cut(line, ":")
		if path.Base(mod) != "virtio_pci.ko" {
			continue
		}
		fields := strings.Fields(rest)
		var order []string
		for i := len(fields) - 1; i >= 0; i-- {
			order = append(order, strings.TrimSuffix(path.Base(fields[i]), ".ko"))
		}
		order = append(order, "virtio_pci")
		idx := func(n string) int { return slices.Index(order, n) }
		if idx("virtio_ring") < 0 || idx("virtio_ring") > idx("virtio") || idx("virtio") > idx("virtio_pci_modern_dev") ||
			idx("virtio") > idx("virtio_pci_legacy_dev") || idx("virtio_pci_modern_dev") > idx("virtio_pci") {
			t.Fatalf("virtio_pci load order from modules.dep is wrong: %v", order)
		}
		return
	}
	t.Fatalf("modules.dep has no virtio_pci line:\n%s", dep)
}

// checkWithGNUCpio decompresses with the reference zstd tool and lists with GNU cpio.
func checkWithGNUCpio(t *testing.T, initramfs string, want int) {
	t.Helper()
	zstdBin := testenv.RequireCommand(t, "zstd")
	cpio := testenv.RequireCommand(t, "cpio")
	raw, err := exec.Command(zstdBin, "-dc", initramfs).Output()
	if err != nil {
		t.Fatalf("zstd -dc: %v", err)
	}
	cmd := exec.Command(cpio, "-it", "--quiet")
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	names := strings.Fields(string(out))
	if len(names) != want || !slices.Contains(names, "init") {
		t.Fatalf("cpio -t lists %d entries (want %d, with init)", len(names), want)
	}
}

func readBack(t *testing.T, p string) []archived {
	t.Helper()
	dec, err := zstd.NewReader(bytes.NewReader(mustRead(t, p)))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(dec); err != nil {
		t.Fatal(err)
	}
	entries, err := readArchive(raw.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha256File(t *testing.T, p string) string { return sha256Hex(mustRead(t, p)) }

// testLog sends slog output to t.Log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
