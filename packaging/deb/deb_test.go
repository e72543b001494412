// Package deb holds the recipe of Rivet's Debian packages (build.sh, run by `make debs`);
// this test builds them from freshly compiled binaries and checks them with dpkg.
package deb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/internal/testenv"
)

const (
	testVersion    = "v1.2.3-4-gabcdef0"
	testDebVersion = "1.2.3+4.gabcdef0"
	testEpoch      = "1700000000" // 2023-11-14 22:13:20 UTC
)

// build runs build.sh into out under the given umask and returns the two .deb paths.
func build(t *testing.T, bin, boot, out, umask string) (rivet, agent string) {
	t.Helper()
	script := filepath.Join(testenv.RepoRoot(t), "packaging", "deb", "build.sh")
	cmd := exec.Command("sh", "-c", "umask "+umask+" && exec \"$0\" --bin \"$1\" --boot \"$2\" --ipxe \"$2/ipxe\" --out \"$3\"",
		script, bin, boot, out)
	cmd.Env = append(os.Environ(), "VERSION="+testVersion, "SOURCE_DATE_EPOCH="+testEpoch)
	msg, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build.sh: %v\n%s", err, msg)
	}
	rivet = filepath.Join(out, "rivet_"+testDebVersion+"_amd64.deb")
	agent = filepath.Join(out, "rivet-agent_"+testDebVersion+"_amd64.deb")
	for _, p := range []string{rivet, agent} {
		if !strings.Contains(string(msg), p) {
			t.Fatalf("build.sh did not report %s:\n%s", p, msg)
		}
	}
	return rivet, agent
}

// inputs compiles the two binaries with a version stamp. The boot files are opaque
// payload to the recipe (it copies them), so small stand-ins do; the real ones come
// from rivet-mkinitramfs and Debian's ipxe package in `make debs`.
func inputs(t *testing.T) (bin, boot string) {
	t.Helper()
	dir := t.TempDir()
	bin, boot = filepath.Join(dir, "bin"), filepath.Join(dir, "boot")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin+"/",
		"-ldflags", "-X github.com/rivetmetal/rivet/shared.Version="+testVersion,
		"./coordinator/cmd/rivet", "./agent/cmd/rivet-agent")
	cmd.Dir = testenv.RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, msg)
	}
	if err := os.MkdirAll(filepath.Join(boot, "ipxe"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"vmlinuz": "kernel stand-in\n", "initramfs.zst": "initramfs stand-in\n",
		"ipxe/undionly.kpxe": "bios ipxe stand-in\n", "ipxe/snponly.efi": "uefi ipxe stand-in\n", "ipxe/ipxe.efi": "ipxe stand-in\n"} {
		if err := os.WriteFile(filepath.Join(boot, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return bin, boot
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestDebsAreReproducibleAndComplete(t *testing.T) {
	testenv.RequireCommand(t, "dpkg-deb")
	bin, boot := inputs(t)
	rivet, agent := build(t, bin, boot, t.TempDir(), "022")
	rivet2, agent2 := build(t, bin, boot, t.TempDir(), "077")

	t.Run("reproducible", func(t *testing.T) {
		for _, p := range [][2]string{{rivet, rivet2}, {agent, agent2}} {
			a, _ := os.ReadFile(p[0])
			b, _ := os.ReadFile(p[1])
			if len(a) == 0 || !bytes.Equal(a, b) {
				t.Errorf("%s differs between two builds of the same inputs (umask 022 vs 077)", filepath.Base(p[0]))
			}
		}
	})

	t.Run("control", func(t *testing.T) {
		for deb, want := range map[string]map[string]string{
			rivet: {"Package": "rivet", "Recommends": ""}, // the iPXE binaries are copied in
			agent: {"Package": "rivet-agent", "Recommends": "docker.io"},
		} {
			want["Version"] = testDebVersion
			want["Architecture"] = "amd64"
			want["Depends"] = "init-system-helpers (>= 1.54~)"
			for field, value := range want {
				if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, field)); got != value {
					t.Errorf("%s: %s is %q, want %q", filepath.Base(deb), field, got, value)
				}
			}
			for _, field := range []string{"Maintainer", "Installed-Size", "Description"} {
				if strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, field)) == "" {
					t.Errorf("%s: no %s", filepath.Base(deb), field)
				}
			}
		}
	})

	t.Run("contents", func(t *testing.T) {
		for deb, paths := range map[string][]string{
			rivet: {"./usr/bin/rivet", "./lib/systemd/system/rivet-coordinator.service",
				"./usr/lib/rivet/boot/vmlinuz", "./usr/lib/rivet/boot/initrd.zst",
				"./usr/lib/rivet/boot/undionly.kpxe", "./usr/lib/rivet/boot/snponly.efi", "./usr/lib/rivet/boot/ipxe.efi",
				"./usr/share/rivet/examples/roles.example.yaml", "./usr/share/doc/rivet/copyright",
				"./etc/default/rivet-coordinator"},
			agent: {"./usr/bin/rivet-agent", "./lib/systemd/system/rivet-agent.service",
				"./etc/rivet/agent.yaml.example", "./usr/share/doc/rivet-agent/copyright"},
		} {
			listing := run(t, "dpkg-deb", "-c", deb)
			for _, p := range paths {
				if !strings.Contains(listing, " "+p+"\n") {
					t.Errorf("%s lacks %s; it has:\n%s", filepath.Base(deb), p, listing)
				}
			}
			for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
				f := strings.Fields(line)
				if len(f) < 6 || f[1] != "root/root" || f[3] != "2023-11-14" || f[4] != "22:13" {
					t.Errorf("%s: entry not root-owned at SOURCE_DATE_EPOCH: %s", filepath.Base(deb), line)
				}
				if strings.Contains(line, "/etc/rivet/agent.yaml ") || strings.Contains(line, "/var/lib/rivet") {
					t.Errorf("%s ships machine config or state: %s", filepath.Base(deb), line)
				}
			}
		}
	})

	t.Run("extracted", func(t *testing.T) {
		root := t.TempDir()
		run(t, "dpkg-deb", "-x", agent, root)
		run(t, "dpkg-deb", "-x", rivet, root)
		if out := run(t, filepath.Join(root, "usr/bin/rivet-agent"), "version"); !strings.Contains(out, testVersion) {
			t.Errorf("rivet-agent version says %q, want %s", out, testVersion)
		}
		if out := run(t, filepath.Join(root, "usr/bin/rivet"), "version"); !strings.Contains(out, testVersion) {
			t.Errorf("rivet version says %q, want %s", out, testVersion)
		}
		shipped, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/rivet-agent.service"))
		source, _ := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "packaging/systemd/rivet-agent.service"))
		if !bytes.Equal(shipped, source) || !bytes.Contains(shipped, []byte("\nConditionPathExists=/etc/rivet/agent.yaml\n")) {
			t.Errorf("the shipped rivet-agent.service is not packaging/systemd's, with ConditionPathExists=/etc/rivet/agent.yaml")
		}
		// Every boot file is a regular file: the TFTP server refuses links out of its
		// directory, so a link to /usr/lib/ipxe would be "access violation".
		bootFiles, _ := os.ReadDir(filepath.Join(root, "usr/lib/rivet/boot"))
		for _, e := range bootFiles {
			if !e.Type().IsRegular() {
				t.Errorf("/usr/lib/rivet/boot/%s is not a regular file (%v)", e.Name(), e.Type())
			}
		}
		if len(bootFiles) < 5 {
			t.Errorf("/usr/lib/rivet/boot holds %d files, want the kernel, the initramfs and 3 iPXE binaries", len(bootFiles))
		}
		// The coordinator's settings: the file the unit reads, owner-only (it may hold the
		// join token), and a conffile, so an upgrade keeps the admin's edits.
		settings, err := os.Stat(filepath.Join(root, "etc/default/rivet-coordinator"))
		if err != nil || settings.Mode().Perm() != 0o600 {
			t.Errorf("/etc/default/rivet-coordinator: %v, mode %v; want mode 0600", err, settings.Mode())
		}
		unit, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/rivet-coordinator.service"))
		if !bytes.Contains(unit, []byte("\nEnvironmentFile=-/etc/default/rivet-coordinator\n")) ||
			!bytes.Contains(unit, []byte("--boot-dir /usr/lib/rivet/boot")) {
			t.Errorf("the shipped rivet-coordinator.service does not read /etc/default/rivet-coordinator or serve /usr/lib/rivet/boot")
		}
		for deb, want := range map[string]string{agent: "/etc/rivet/agent.yaml.example\n", rivet: "/etc/default/rivet-coordinator\n"} {
			control := t.TempDir()
			run(t, "dpkg-deb", "-e", deb, control)
			if c, _ := os.ReadFile(filepath.Join(control, "conffiles")); string(c) != want {
				t.Errorf("%s: conffiles is %q, want %q", filepath.Base(deb), c, want)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				run(t, "sh", "-n", filepath.Join(control, s))
			}
		}
	})

	// dpkg --root with chrootless scripts: the maintainer scripts run against a
	// throwaway root (deb-systemd-helper honours DPKG_ROOT) and never touch the host's
	// systemd. Install enables the units; purge removes every trace.
	t.Run("install-purge", func(t *testing.T) {
		testenv.RequireCommand(t, "dpkg")
		testenv.RequireCommand(t, "deb-systemd-helper")
		root := t.TempDir()
		for _, d := range []string{"info", "updates", "triggers"} {
			if err := os.MkdirAll(filepath.Join(root, "var/lib/dpkg", d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"status", "available"} {
			if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg", f), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		dpkg := func(args ...string) string {
			// init-system-helpers lives on the host, not in the empty root.
			return run(t, "dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends",
				"--force-not-root", "--log=/dev/null"}, args...)...)
		}
		dpkg("-i", agent, rivet)
		wantsDir := filepath.Join(root, "etc/systemd/system/multi-user.target.wants")
		for _, unit := range []string{"rivet-agent.service", "rivet-coordinator.service"} {
			if target, err := os.Readlink(filepath.Join(wantsDir, unit)); err != nil || target != "/lib/systemd/system/"+unit {
				t.Fatalf("postinst did not enable %s: %v %q", unit, err, target)
			}
		}
		wants := filepath.Join(wantsDir, "rivet-agent.service")
		if _, err := os.Stat(filepath.Join(root, "etc/rivet/agent.yaml")); !os.IsNotExist(err) {
			t.Errorf("install created /etc/rivet/agent.yaml; only the RAM agent or the admin may")
		}
		dpkg("-P", "rivet-agent", "rivet")
		for _, p := range []string{wants, filepath.Join(wantsDir, "rivet-coordinator.service"), filepath.Join(root, "usr/bin/rivet-agent"),
			filepath.Join(root, "usr/bin/rivet"), filepath.Join(root, "etc/rivet/agent.yaml.example"),
			filepath.Join(root, "etc/default/rivet-coordinator")} {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Errorf("%s is still there after purge", p)
			}
		}
	})
}
