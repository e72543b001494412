package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rivetmetal/rivet/internal/testenv"
	"github.com/rivetmetal/rivet/packaging/systemd"
	"github.com/rivetmetal/rivet/shared"
)

// TestPackagedCoordinatorBootsAMachine is the packaged install, end to end, as an admin
// meets it on a new server:
//
//  1. the rivet .deb, built by packaging/deb/build.sh from this run's binaries, is
//     installed with `apt-get install ./rivet_*.deb` into a clean Debian 12 root
//     (debootstrap minbase, cached under build/packaged/), without network access;
//  2. the test edits the shipped /etc/default/rivet-coordinator as the admin would
//     (advertised IP, boot interface, one more flag), reads the installed unit and that
//     file the way systemd does, and runs exactly that command line in the root, in a
//     network namespace on the lab's bridge, as the unit's DynamicUser (an unprivileged
//     uid) with only the unit's capabilities, beside the site's DHCP server (dnsmasq);
//  3. a blank UEFI qemu VM PXE-boots from it (OVMF, then the package's snponly.efi over
//     TFTP, then the kernel and initramfs from /usr/lib/rivet/boot) and registers.
//
// systemd itself does not run; the unit's sandboxing beyond user and capabilities
// (ProtectSystem= and the like) is checked by systemd-analyze in packaging/systemd.
func TestPackagedCoordinatorBootsAMachine(t *testing.T) {
	testenvLong(t)
	testenv.RequireRoot(t)
	for _, c := range []string{"debootstrap", "dpkg-deb", "unshare", "tar", "zstd", "qemu-system-x86_64", "dnsmasq"} {
		testenv.RequireCommand(t, c)
	}
	testenv.RequireFile(t, "/usr/share/ovmf/OVMF.fd")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := t.TempDir()

	deb := buildRivetDeb(t, dir)
	root := packagedRoot(t)
	start := time.Now()
	aptInstallInRoot(t, root, deb)
	fmt.Printf("rivet-figure: packaged apt_install_seconds=%.1f (apt-get install ./%s in a clean Debian 12 root)\n",
		time.Since(start).Seconds(), filepath.Base(deb))
	checkPackagedBootDir(t, root)

	lab := newNamedNetLab(t, "10.232.74", "rvtd")
	startSiteDHCP(t, lab, dir)
	ns, ip := lab.AddHost(0)
	editSettings(t, filepath.Join(root, "etc/default/rivet-coordinator"), map[string]string{
		"RIVET_ADVERTISE": ip, "RIVET_BOOT_INTERFACE": "eth0",
		// As in the PXE test: a TCG guest on a loaded host needs no_timer_check; panic=-1
		// makes a kernel panic end qemu, so the test fails at once.
		"RIVET_BOOT_CMDLINE": "no_timer_check panic=-1",
		"RIVET_OPTS":         "--log-format json"})
	unit := readPackagedUnit(t, root)
	svc := startPackagedCoordinator(t, root, ns, unit)
	admin := svc.waitReady(t, ctx)
	svc.checkPrivileges(t, unit)

	m := newPXEMachine(t, lab, dir, "uefi", 0, blankDisk(t, dir))
	vm := m.powerOn(t, "discover")
	defer vm.stop()
	var rec *shared.Machine
	testenv.Eventually(t, 5*time.Minute, "the UEFI VM registered with the packaged coordinator", func() error {
		if vm.exited() {
			return fmt.Errorf("qemu exited; serial console:\n%s", tail(vm.console(), 3000))
		}
		ms, err := admin.Machines(ctx)
		if err != nil {
			return err
		}
		for _, sum := range ms {
			if full, err := admin.Machine(ctx, sum.ID); err == nil && full.Inventory != nil && full.Inventory.HasMAC(m.mac) {
				rec = full
				return nil
			}
		}
		return fmt.Errorf("no machine with MAC %s yet", m.mac)
	})
	fmt.Printf("rivet-figure: packaged pxe firmware=uefi seconds=%.1f (qemu start to registered, TCG)\n", time.Since(vm.started).Seconds())
	if rec.Agent.Mode != shared.ModeRAM {
		t.Errorf("the VM registered in %s mode, want ram", rec.Agent.Mode)
	}
	if !slices.ContainsFunc(rec.Inventory.Disks, func(d shared.Disk) bool { return d.Serial == m.serial }) {
		t.Errorf("the VM's disks %+v lack the virtio disk with serial %s", rec.Inventory.Disks, m.serial)
	}
	logs := svc.logs()
	if n := countRecords(logs, func(r logRecord) bool {
		return r.has("msg", "boot services starting") && r.has("dir", "/usr/lib/rivet/boot") && r.has("interface", "eth0")
	}); n != 1 {
		t.Errorf("the coordinator did not start its boot services on eth0 from /usr/lib/rivet/boot (%d records):\n%s", n, tail(logs, 3000))
	}
	if countRecords(logs, func(r logRecord) bool { return r.has("msg", "tftp: sent") && r.has("file", tftpName("snponly.efi")) }) == 0 {
		t.Errorf("the VM booted without snponly.efi from the package's TFTP:\n%s", tail(bootLines(logs), 3000))
	}
}

// buildRivetDeb builds the rivet .deb the way `make debs` does, from this run's binaries
// and an initramfs of this run's agent, and returns its path.
func buildRivetDeb(t *testing.T, dir string) string {
	t.Helper()
	boot, debs := filepath.Join(dir, "initramfs"), filepath.Join(dir, "deb")
	if out, err := exec.Command(bin("rivet-mkinitramfs"), "--agent", bin("rivet-agent"), "--out", boot,
		"--kernel-cache", filepath.Join(repoRoot(), "build", "kernel")).CombinedOutput(); err != nil {
		t.Fatalf("rivet-mkinitramfs: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(repoRoot(), "packaging", "deb", "build.sh"),
		"--bin", binDir, "--boot", boot, "--out", debs).CombinedOutput()
	if err != nil {
		t.Fatalf("packaging/deb/build.sh: %v\n%s", err, out)
	}
	deb := regexp.MustCompile(`(?m)^\S*/rivet_[^/\s]+_amd64\.deb$`).FindString(string(out))
	if deb == "" {
		t.Fatalf("build.sh named no rivet_*_amd64.deb:\n%s", out)
	}
	return deb
}

// packagedRootScript makes the cached root: a clean Debian 12 as debootstrap makes it
// (minbase) from the host's mirror, without the downloaded .debs. $1 is the root, $2
// the mirror. Its text and the mirror name the cache: change either and the root is
// made again.
const packagedRootScript = `set -euo pipefail
debootstrap --variant=minbase bookworm "$1" "$2" >"$1.log" 2>&1 || { tail -n 30 "$1.log"; exit 1; }
chroot "$1" apt-get clean
`

// packagedRoot unpacks the cached clean root (making it first if needed) into a fresh
// directory under build/packaged/, removed when the test ends.
func packagedRoot(t *testing.T) string {
	t.Helper()
	cache := filepath.Join(repoRoot(), "build", "packaged")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	mirror, err := exec.Command("bash", "-c", `. "$0" && mirror_url`, filepath.Join(repoRoot(), "packaging", "labimage", "lib.sh")).Output()
	if err != nil {
		t.Fatalf("finding the Debian mirror (packaging/labimage/lib.sh mirror_url): %v", err)
	}
	sum := sha256.Sum256([]byte(packagedRootScript + "\n" + strings.TrimSpace(string(mirror))))
	tarball := filepath.Join(cache, "debian12-"+hex.EncodeToString(sum[:6])+".tar.zst")
	if _, err := os.Stat(tarball); os.IsNotExist(err) {
		start := time.Now()
		makeRootTarball(t, cache, strings.TrimSpace(string(mirror)), tarball)
		fmt.Printf("rivet-figure: packaged root_build_seconds=%.1f (debootstrap minbase, cached as %s)\n",
			time.Since(start).Seconds(), filepath.Base(tarball))
	}
	root := scratchDir(t, cache, "run-")
	if out, err := exec.Command("tar", "-I", "zstd", "--numeric-owner", "-xf", tarball, "-C", root).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", tarball, err, out)
	}
	return root
}

func makeRootTarball(t *testing.T, cache, mirror, tarball string) {
	t.Helper()
	root := filepath.Join(scratchDir(t, cache, "tmp-"), "root")
	if out, err := exec.Command("bash", "-c", packagedRootScript, "bash", root, mirror).CombinedOutput(); err != nil {
		t.Fatalf("making the clean Debian 12 root: %v\n%s", err, out)
	}
	tmp := tarball + ".tmp" + strconv.Itoa(os.Getpid())
	pack := fmt.Sprintf(`tar --numeric-owner --sort=name -C %q -c . | zstd -q -T0 -3 -f -o %q`, root, tmp)
	if out, err := exec.Command("bash", "-o", "pipefail", "-c", pack).CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("packing the root: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, tarball); err != nil {
		t.Fatal(err)
	}
	stale, _ := filepath.Glob(filepath.Join(cache, "debian12-*.tar.zst"))
	for _, old := range stale {
		if old != tarball {
			os.Remove(old) // made by an older recipe or for another mirror
		}
	}
}

// scratchDir is a new directory under parent, removed at the end of the test without
// ever crossing into another file system (a mount left by a bug stays, and fails the test).
func scratchDir(t *testing.T, parent, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("rm", "-rf", "--one-file-system", dir).CombinedOutput(); err != nil {
			t.Errorf("removing %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// aptInstallInRoot runs `apt-get install ./rivet_*.deb` in the root, as an admin would.
// /proc and /dev exist only in a mount namespace of its own, gone when it exits.
func aptInstallInRoot(t *testing.T, root, deb string) {
	t.Helper()
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	diskWrite(t, filepath.Join(root, "root", filepath.Base(deb)), data)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-ec", `
		mount -t proc proc "$1/proc"
		mount --rbind /dev "$1/dev"
		chroot "$1" sh -ec 'cd /root && apt-get install -y -q ./'"$2"`, "sh", root, filepath.Base(deb))
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("apt-get install ./%s: %v\n%s", filepath.Base(deb), err, out)
	}
	t.Logf("apt-get install ./%s:\n%s", filepath.Base(deb), tail(string(out), 1500))
}

// checkPackagedBootDir checks that apt installed every file the boot services serve.
func checkPackagedBootDir(t *testing.T, root string) {
	t.Helper()
	for _, f := range []string{"vmlinuz", "initrd.zst", "undionly.kpxe", "snponly.efi", "ipxe.efi"} {
		if info, err := os.Lstat(filepath.Join(root, "usr/lib/rivet/boot", f)); err != nil || !info.Mode().IsRegular() || info.Size() == 0 {
			t.Errorf("the installed root has no /usr/lib/rivet/boot/%s as a non-empty regular file: %v", f, err)
		}
	}
}

// editSettings sets variables in the shipped settings file as an admin would: by
// editing each one's line, which must be there.
func editSettings(t *testing.T, path string, values map[string]string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for name, value := range values {
		line := regexp.MustCompile(`(?m)^` + name + `=.*$`)
		if n := len(line.FindAllString(text, -1)); n != 1 {
			t.Fatalf("%s has %d %s= lines, want 1: the shipped file documents every setting the unit reads", path, n, name)
		}
		text = line.ReplaceAllLiteralString(text, name+"="+value)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// packagedUnit is how the installed unit runs the coordinator, read as systemd reads it.
type packagedUnit struct {
	argv     []string
	env      []string // NAME=value: the environment files' variables and PATH
	caps     []string // capability names as setpriv spells them: net_raw
	stateDir string   // StateDirectory=, under /var/lib
	umask    string
}

func readPackagedUnit(t *testing.T, root string) packagedUnit {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/rivet-coordinator.service"))
	if err != nil {
		t.Fatal(err)
	}
	u, err := systemd.ParseUnit(string(text))
	if err != nil {
		t.Fatalf("the installed rivet-coordinator.service: %v", err)
	}
	svc := func(key string) string { return u.Value("Service", key) }
	if len(u["Service"]["Environment"]) > 0 || svc("DynamicUser") != "yes" || svc("User") != "" {
		t.Fatalf("the unit sets Environment=, User= or no DynamicUser=yes: this test does not run it that way yet")
	}
	vars := map[string]string{}
	for _, f := range u["Service"]["EnvironmentFile"] {
		path, optional := strings.CutPrefix(f, "-")
		data, err := os.ReadFile(filepath.Join(root, path))
		if optional && os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		env, err := systemd.ParseEnvironmentFile(string(data))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for k, v := range env {
			vars[k] = v
		}
	}
	p := packagedUnit{stateDir: svc("StateDirectory"), umask: svc("UMask"),
		env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	if p.argv, err = systemd.Command(svc("ExecStart"), vars); err != nil {
		t.Fatal(err)
	}
	for k, v := range vars {
		p.env = append(p.env, k+"="+v)
	}
	for _, c := range strings.Fields(svc("AmbientCapabilities")) {
		p.caps = append(p.caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	if svc("AmbientCapabilities") != svc("CapabilityBoundingSet") || p.stateDir == "" || p.umask == "" {
		t.Fatalf("the unit's AmbientCapabilities= differs from CapabilityBoundingSet=, or it has no StateDirectory= or UMask=: extend this test")
	}
	t.Logf("the unit runs: %q", p.argv)
	return p
}

// packagedService is the coordinator running from the installed root.
type packagedService struct {
	root, log string
	dataDir   string // on the host: the root's /var/lib/StateDirectory
	uid       int
}

// packagedRunScript enters the root as systemd would start the unit: /proc, /sys, /dev
// and a private /tmp in a mount namespace of its own, the unit's umask, then setpriv to
// the unprivileged uid with exactly the unit's capabilities and no new privileges.
// $1 root, $2 uid, $3 capabilities (+a,+b), $4 umask; the rest is the command line.
const packagedRunScript = `set -e
root=$1 uid=$2 caps=$3
umask "$4"
shift 4
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/tmp"
exec chroot "$root" setpriv --reuid="$uid" --regid="$uid" --clear-groups --no-new-privs --pdeathsig KILL \
	--inh-caps=-all,"$caps" --ambient-caps=-all,"$caps" --bounding-set=-all,"$caps" -- "$@"
`

func startPackagedCoordinator(t *testing.T, root, ns string, u packagedUnit) *packagedService {
	t.Helper()
	// systemd's DynamicUser range is 61184-65519.
	n, _ := rand.Int(rand.Reader, big.NewInt(4000))
	s := &packagedService{root: root, log: filepath.Join(t.TempDir(), "coordinator.log"),
		dataDir: filepath.Join(root, "var/lib", u.stateDir), uid: 61184 + int(n.Int64())}
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(s.dataDir, s.uid, s.uid); err != nil {
		t.Fatal(err)
	}
	caps := "+" + strings.Join(u.caps, ",+")
	args := slices.Concat([]string{"netns", "exec", ns, "env", "-i"}, u.env,
		[]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", packagedRunScript, "sh",
			root, strconv.Itoa(s.uid), caps, u.umask}, u.argv)
	startDaemon(t, s.log, "ip", args...)
	return s
}

func (s *packagedService) logs() string {
	data, _ := os.ReadFile(s.log)
	return string(data)
}

// waitReady waits for the operator credentials the coordinator writes on its first
// start and for it to answer health, and returns an admin client.
func (s *packagedService) waitReady(t *testing.T, ctx context.Context) *shared.Client {
	t.Helper()
	var creds shared.OperatorCredentials
	testenv.Eventually(t, time.Minute, "the packaged coordinator's operator.env", func() error {
		var err error
		if creds, err = shared.ReadOperatorCredentials(filepath.Join(s.dataDir, "operator.env")); err != nil {
			return fmt.Errorf("%w; log:\n%s", err, tail(s.logs(), 2000))
		}
		return nil
	})
	admin, err := shared.NewClient(shared.ClientConfig{URLs: creds.Servers,
		CAFingerprint: creds.CAFingerprint, Token: creds.Token, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "the packaged coordinator's health", func() error {
		h, err := admin.Health(ctx)
		if err == nil && h.Status != "ok" {
			err = fmt.Errorf("status %s", h.Status)
		}
		return err
	})
	return admin
}

// capabilityBits are the capabilities the unit may name, by their number in the kernel.
var capabilityBits = map[string]uint{"net_bind_service": 10, "net_raw": 13}

// checkPrivileges finds the coordinator (the process whose root is the installed root)
// and checks it runs as the unit says: the unprivileged uid, exactly the unit's
// capabilities, no new privileges.
func (s *packagedService) checkPrivileges(t *testing.T, u packagedUnit) {
	t.Helper()
	var want uint64
	for _, c := range u.caps {
		bit, ok := capabilityBits[c]
		if !ok {
			t.Fatalf("the unit names capability %s, which this test does not know", c)
		}
		want |= 1 << bit
	}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	found := 0
	for _, p := range pids {
		if r, err := os.Readlink(p + "/root"); err != nil || r != s.root {
			continue
		}
		found++
		status, err := os.ReadFile(p + "/status")
		if err != nil {
			t.Fatal(err)
		}
		fields := map[string]string{}
		for line := range strings.Lines(string(status)) {
			k, v, _ := strings.Cut(line, ":")
			fields[k] = strings.TrimSpace(v)
		}
		uid := strconv.Itoa(s.uid)
		for _, ids := range []string{fields["Uid"], fields["Gid"]} {
			if strings.Join(strings.Fields(ids), " ") != strings.Repeat(uid+" ", 3)+uid {
				t.Errorf("%s (%s) runs as Uid %q Gid %q, want %s (real, effective, saved, fs)", p, fields["Name"], fields["Uid"], fields["Gid"], uid)
			}
		}
		if eff, err := strconv.ParseUint(fields["CapEff"], 16, 64); err != nil || eff != want {
			t.Errorf("%s (%s) has CapEff %s, want %#x (%s)", p, fields["Name"], fields["CapEff"], want, strings.Join(u.caps, ", "))
		}
		if fields["NoNewPrivs"] != "1" {
			t.Errorf("%s (%s) may gain privileges (NoNewPrivs %q)", p, fields["Name"], fields["NoNewPrivs"])
		}
	}
	if found != 1 {
		t.Errorf("%d processes run in %s, want 1 (the coordinator)", found, s.root)
	}
}

// blankDisk is a small empty disk: the agent only has to inventory it.
func blankDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "blank.img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 32<<20); err != nil {
		t.Fatal(err)
	}
	return path
}
