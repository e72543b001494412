package lab

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// What the lab needs on the host, and the Debian packages that bring it.
var (
	needCommands = map[string]string{"ip": "iproute2", "qemu-system-x86_64": "qemu-system-x86", "zstd": "zstd"}
	needFiles    = map[string]string{"/usr/lib/ipxe/undionly.kpxe": "ipxe", "/usr/lib/ipxe/snponly.efi": "ipxe",
		"/usr/share/OVMF/OVMF_CODE_4M.fd": "ovmf", "/usr/share/misc/pci.ids": "hwdata"}
)

// missingPackages returns the Debian packages whose commands or files are missing.
func missingPackages() []string {
	seen := map[string]bool{}
	var pkgs []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			pkgs = append(pkgs, p)
		}
	}
	for cmd, pkg := range needCommands {
		if _, err := exec.LookPath(cmd); err != nil {
			add(pkg)
		}
	}
	for f, pkg := range needFiles {
		if _, err := os.Stat(f); err != nil {
			add(pkg)
		}
	}
	return pkgs
}

// ensurePackages installs what is missing on first use, with the project's install script.
func (c *Config) ensurePackages(ctx context.Context) error {
	missing := missingPackages()
	if len(missing) == 0 {
		return nil
	}
	if c.InstallDebs == "" {
		return fmt.Errorf("the lab needs the Debian packages %s: apt-get install %s",
			strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	fmt.Fprintf(c.Out, "installing what the lab needs (%s) with %s ...\n", strings.Join(missing, ", "), c.InstallDebs)
	cmd := exec.CommandContext(ctx, "bash", c.InstallDebs)
	cmd.Stdout, cmd.Stderr = c.Out, c.Out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", c.InstallDebs, err)
	}
	if still := missingPackages(); len(still) > 0 {
		return fmt.Errorf("still missing after %s: %s", c.InstallDebs, strings.Join(still, ", "))
	}
	return nil
}

// ensureBootFiles puts the agent's kernel and initramfs and the iPXE binaries into the
// boot directory. The initramfs is rebuilt when the agent binary is newer than it.
func (c *Config) ensureBootFiles(ctx context.Context) error {
	dir := c.bootDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	agent := filepath.Join(c.BinDir, "rivet-agent")
	agentInfo, err := os.Stat(agent)
	if err != nil {
		return fmt.Errorf("the lab's agent: %w (run `make build`)", err)
	}
	if err := requireStatic(agent); err != nil {
		return err
	}
	initrd := filepath.Join(dir, "initrd.zst")
	if info, err := os.Stat(initrd); err != nil || info.ModTime().Before(agentInfo.ModTime()) {
		fmt.Fprintf(c.Out, "building the agent's initramfs ...\n")
		cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "rivet-mkinitramfs"), "--agent", agent,
			"--out", dir, "--kernel-cache", c.KernelCache)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("rivet-mkinitramfs: %w\n%s", err, out)
		}
		if err := os.Rename(filepath.Join(dir, "initramfs.zst"), initrd); err != nil {
			return err
		}
	}
	for _, f := range []string{"undionly.kpxe", "snponly.efi"} {
		if err := copyIfMissing(filepath.Join("/usr/lib/ipxe", f), filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	return nil
}

// requireStatic refuses a dynamically linked agent: as /init of the initramfs it would
// fail with "No working init found" (its ELF interpreter is not there).
func requireStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("the lab's agent %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked and cannot be the initramfs's /init: "+
				"build it with CGO_ENABLED=0 (make build does)", path)
		}
	}
	return nil
}

var sha256Hex = regexp.MustCompile(`\b[0-9a-f]{64}\b`)

// imageDigest reads IMAGE.sha256 (sha256sum's format, or the bare digest): the digest of
// the uncompressed image, which the agent checks while it writes.
func imageDigest(image string) (string, error) {
	data, err := os.ReadFile(image + ".sha256")
	if err != nil {
		return "", fmt.Errorf("the lab image's digest: %w (make lab-image writes it beside the image)", err)
	}
	d := sha256Hex.FindString(strings.ToLower(string(data)))
	if d == "" {
		return "", fmt.Errorf("%s.sha256 holds no sha256 digest", image)
	}
	return d, nil
}

// ensureDisk creates VM i's blank sparse disk unless it exists (a second Up keeps it).
func (c *Config) ensureDisk(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(c.DiskGiB) << 30); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func copyIfMissing(from, to string) error {
	if _, err := os.Stat(to); err == nil {
		return nil
	}
	return copyFile(from, to)
}

// copyFile copies from to to through a temporary file, so that to is whole or absent.
func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := to + ".tmp"
	dst, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return os.Rename(tmp, to)
}
