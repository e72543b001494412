package initramfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// KernelMetapackage is the Debian package whose dependency names the current kernel.
const KernelMetapackage = "linux-image-amd64"

// Kernel is an unpacked Debian kernel package: the tree dpkg-deb -x produced.
type Kernel struct {
	Dir            string // root of the unpacked package (holds boot/ and lib/modules/)
	Release        string // what uname -r reports, e.g. "6.1.0-56-amd64"
	Package        string // e.g. "linux-image-6.1.0-56-amd64"; empty for a tree given by hand
	PackageVersion string // e.g. "6.1.192-2"
}

// VmlinuzPath is the kernel image inside the tree.
func (k Kernel) VmlinuzPath() string {
	return filepath.Join(k.Dir, "boot", "vmlinuz-"+k.Release)
}

// ModulesDir is lib/modules/<release> inside the tree.
func (k Kernel) ModulesDir() string {
	return filepath.Join(k.Dir, "lib", "modules", k.Release)
}

// FetchKernel makes sure the kernel package that linux-image-amd64 depends on is
// unpacked under cacheDir and returns it. The package is fetched with `apt-get download`
// and unpacked with `dpkg-deb -x`; nothing is installed on the host. A tree already in
// the cache is reused, so only a new kernel version in the apt lists causes a download.
// Concurrent callers (parallel test binaries) serialise on a lock file in cacheDir.
func FetchKernel(ctx context.Context, log *slog.Logger, cacheDir string) (Kernel, error) {
	pkg, err := kernelPackage(ctx)
	if err != nil {
		return Kernel{}, err
	}
	version, err := aptCandidateVersion(ctx, pkg)
	if err != nil {
		return Kernel{}, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	unlock, err := lockDir(cacheDir)
	if err != nil {
		return Kernel{}, err
	}
	defer unlock()

	treeDir := filepath.Join(cacheDir, pkg+"_"+version)
	if _, err := os.Stat(filepath.Join(treeDir, ".complete")); err == nil {
		log.Debug("kernel package cached", "package", pkg, "version", version, "dir", treeDir)
		return openKernelPackage(treeDir, pkg, version)
	}
	log.Info("fetching kernel package", "package", pkg, "version", version, "cache", cacheDir)
	if err := downloadAndUnpack(ctx, cacheDir, treeDir, pkg, version); err != nil {
		return Kernel{}, err
	}
	return openKernelPackage(treeDir, pkg, version)
}

// OpenKernel reads a kernel tree unpacked by hand (for builds without apt).
func OpenKernel(dir string) (Kernel, error) {
	return openKernelPackage(dir, "", "")
}

func openKernelPackage(dir, pkg, version string) (Kernel, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "lib", "modules"))
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel tree %s: %w (want the contents of a linux-image .deb)", dir, err)
	}
	var releases []string
	for _, e := range entries {
		if e.IsDir() {
			releases = append(releases, e.Name())
		}
	}
	if len(releases) != 1 {
		return Kernel{}, fmt.Errorf("kernel tree %s: want exactly one lib/modules/<release>, found %q", dir, releases)
	}
	k := Kernel{Dir: dir, Release: releases[0], Package: pkg, PackageVersion: version}
	if _, err := os.Stat(k.VmlinuzPath()); err != nil {
		return Kernel{}, fmt.Errorf("kernel tree %s: %w", dir, err)
	}
	return k, nil
}

// kernelPackage asks apt which linux-image-<release> the metapackage depends on.
func kernelPackage(ctx context.Context) (string, error) {
	out, err := runTool(ctx, "", "apt-cache", "depends", KernelMetapackage)
	if err != nil {
		return "", fmt.Errorf("%w (on Debian run apt-get update; elsewhere pass an unpacked kernel tree)", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		dep, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Depends: ")
		if ok && strings.HasPrefix(dep, "linux-image-") {
			return dep, nil
		}
	}
	return "", fmt.Errorf("apt-cache depends %s names no linux-image-* package", KernelMetapackage)
}

func aptCandidateVersion(ctx context.Context, pkg string) (string, error) {
	out, err := runTool(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Version: "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("apt-cache show %s: no Version field", pkg)
}

// downloadAndUnpack fetches the .deb into a scratch directory, unpacks it and renames the
// tree into place only when complete, so an interrupted run never leaves a half tree.
func downloadAndUnpack(ctx context.Context, cacheDir, treeDir, pkg, version string) error {
	scratch, err := os.MkdirTemp(cacheDir, ".fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	// apt-get drops privileges to _apt for downloads; let it write the scratch dir.
	if err := os.Chmod(scratch, 0o777); err != nil {
		return err
	}
	if _, err := runTool(ctx, scratch, "apt-get", "download", "-q", pkg+"="+version); err != nil {
		return fmt.Errorf("%w (is an apt mirror reachable?)", err)
	}
	debs, _ := filepath.Glob(filepath.Join(scratch, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d .deb files, want 1", pkg, len(debs))
	}
	tree := filepath.Join(scratch, "tree")
	if _, err := runTool(ctx, "", "dpkg-deb", "-x", debs[0], tree); err != nil {
		return err
	}
	stamp := fmt.Sprintf("package=%s\nversion=%s\n", pkg, version)
	if err := os.WriteFile(filepath.Join(tree, ".complete"), []byte(stamp), 0o644); err != nil {
		return err
	}
	_ = os.RemoveAll(treeDir) // an incomplete leftover from a crashed run
	return os.Rename(tree, treeDir)
}

func runTool(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var notFound *exec.Error
		if errors.As(err, &notFound) {
			return nil, fmt.Errorf("%s not found: fetching the kernel needs Debian's apt and dpkg", name)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// lockDir takes an exclusive flock on dir/.lock; the returned func releases it.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kernel cache lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("kernel cache lock: %w", err)
	}
	return func() { f.Close() }, nil
}
