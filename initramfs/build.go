// Package initramfs builds the RAM agent's boot files: a Debian kernel image and a
// reproducible initramfs whose /init is rivet-agent, with the NIC and disk drivers it
// needs (plus their dependencies, modules.dep and modules.alias generated from the
// modules' own .modinfo), the firmware those drivers name when it is available, and
// pci.ids for the inventory.
//
// The archive is a newc cpio written here (sorted, owner 0:0, mtime 0, fixed inode
// numbers) and compressed with a single-threaded zstd encoder, so the same inputs give
// the same bytes on every machine. This is build-time code: nothing in the agent imports it.
package initramfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Output file names in Spec.OutDir.
const (
	InitramfsName = "initramfs.zst"
	KernelName    = "vmlinuz"
	stampName     = "initramfs.json"
)

// formatVersion changes whenever Build would lay out the same inputs differently, so a
// stamp from an older builder never suppresses a rebuild.
const formatVersion = 1

// DefaultPCIIDs are the places Debian keeps pci.ids (package pci.ids; hwdata links to it).
var DefaultPCIIDs = []string{"/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"}

// Spec says what goes into the initramfs.
type Spec struct {
	Agent        string   // path of the agent binary; becomes /init
	Kernel       Kernel   // from FetchKernel or OpenKernel
	Modules      []string // module names; nil means DefaultModules
	FirmwareDirs []string // extra places to find the firmware the modules name (e.g. /lib/firmware)
	PCIIDs       string   // path of pci.ids; "" means the first of DefaultPCIIDs that exists
	OutDir       string   // where initramfs.zst, vmlinuz and initramfs.json are written
	Log          *slog.Logger
}

// Result describes what Build wrote.
type Result struct {
	InitramfsPath   string   `json:"initramfs_path"`
	KernelPath      string   `json:"kernel_path"`
	KernelRelease   string   `json:"kernel_release"`
	CompressedSize  int64    `json:"compressed_size"`   // initramfs.zst
	ArchiveSize     int64    `json:"archive_size"`      // the cpio before compression
	KernelSize      int64    `json:"kernel_size"`       // vmlinuz
	SHA256          string   `json:"sha256"`            // of initramfs.zst
	ArchiveSHA256   string   `json:"archive_sha256"`    // of the cpio; with KernelSHA256 the rebuild key
	KernelSHA256    string   `json:"kernel_sha256"`     // of vmlinuz
	Modules         []string `json:"modules"`           // load order
	Builtin         []string `json:"builtin,omitempty"` // wanted but built into the kernel
	Firmware        []string `json:"firmware,omitempty"`
	MissingFirmware []string `json:"missing_firmware,omitempty"`
	Reused          bool     `json:"-"` // outputs were already up to date
}

// Build assembles the archive, and compresses and writes it only when its contents
// differ from what OutDir already holds.
func Build(ctx context.Context, spec Spec) (Result, error) {
	log := spec.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if spec.Agent == "" || spec.OutDir == "" || spec.Kernel.Dir == "" {
		return Result{}, errors.New("initramfs: Spec needs Agent, Kernel and OutDir")
	}
	start := time.Now()
	t, res, err := assemble(spec, log)
	if err != nil {
		return Result{}, err
	}
	var archive bytes.Buffer
	if _, err := t.writeTo(&archive); err != nil {
		return Result{}, err
	}
	res.ArchiveSize = int64(archive.Len())
	res.ArchiveSHA256 = sha256Hex(archive.Bytes())
	res.InitramfsPath = filepath.Join(spec.OutDir, InitramfsName)
	res.KernelPath = filepath.Join(spec.OutDir, KernelName)
	vmlinuz, err := os.ReadFile(spec.Kernel.VmlinuzPath())
	if err != nil {
		return Result{}, err
	}
	res.KernelSize = int64(len(vmlinuz))
	res.KernelSHA256 = sha256Hex(vmlinuz)
	if err := os.MkdirAll(spec.OutDir, 0o755); err != nil {
		return Result{}, err
	}
	if prev, ok := upToDate(spec.OutDir, res); ok {
		prev.Reused = true
		log.Info("initramfs up to date", "path", prev.InitramfsPath, "sha256", prev.SHA256)
		return prev, nil
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	compressed, err := compress(archive.Bytes())
	if err != nil {
		return Result{}, err
	}
	res.CompressedSize = int64(len(compressed))
	res.SHA256 = sha256Hex(compressed)
	if err := writeAtomic(res.KernelPath, vmlinuz); err != nil {
		return Result{}, err
	}
	if err := writeAtomic(res.InitramfsPath, compressed); err != nil {
		return Result{}, err
	}
	stamp, _ := json.MarshalIndent(stampFile{Format: formatVersion, Result: res}, "", "  ")
	if err := writeAtomic(filepath.Join(spec.OutDir, stampName), append(stamp, '\n')); err != nil {
		return Result{}, err
	}
	log.Info("initramfs built", "path", res.InitramfsPath, "compressed_bytes", res.CompressedSize,
		"archive_bytes", res.ArchiveSize, "modules", len(res.Modules), "took", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// assemble gathers every file of the archive in memory.
func assemble(spec Spec, log *slog.Logger) (*tree, Result, error) {
	res := Result{KernelRelease: spec.Kernel.Release}
	t := newTree()
	for _, dir := range []string{"dev", "etc", "proc", "sys", "tmp", "run", "mnt", "root", "var/tmp"} {
		t.addDir(dir)
	}
	// The kernel opens /dev/console for /init's stdio before /init can mount devtmpfs.
	if err := t.addCharDev("dev/console", 0o600, 5, 1); err != nil {
		return nil, res, err
	}
	agent, err := os.ReadFile(spec.Agent)
	if err != nil {
		return nil, res, fmt.Errorf("agent binary: %w (build rivet-agent first)", err)
	}
	if err := t.addFile("init", 0o755, agent); err != nil {
		return nil, res, err
	}
	if err := addModules(t, spec, log, &res); err != nil {
		return nil, res, err
	}
	pciIDs, err := findPCIIDs(spec.PCIIDs)
	if err != nil {
		return nil, res, err
	}
	if err := addHostFile(t, "usr/share/misc/pci.ids", pciIDs); err != nil {
		return nil, res, err
	}
	return t, res, nil
}

// addModules puts the module closure, modules.dep, modules.alias, modules.builtin and
// the firmware the modules name under lib/.
func addModules(t *tree, spec Spec, log *slog.Logger, res *Result) error {
	modDir := spec.Kernel.ModulesDir()
	index, err := indexModules(modDir)
	if err != nil {
		return err
	}
	builtin, builtinList, err := readBuiltin(modDir)
	if err != nil {
		return err
	}
	want := spec.Modules
	if want == nil {
		want = DefaultModules
	}
	set, err := resolveModules(want, builtin, func(name string) (*module, error) {
		rel, ok := index[name]
		if !ok {
			return nil, fmt.Errorf("module %s is not in kernel %s (check the name with `find %s -name '%s.ko'`)",
				name, spec.Kernel.Release, modDir, name)
		}
		return readModule(modDir, rel)
	})
	if err != nil {
		return err
	}
	res.Builtin = set.Builtin
	base := path.Join("lib/modules", spec.Kernel.Release)
	for _, m := range set.Ordered {
		res.Modules = append(res.Modules, m.Name)
		if err := addHostFile(t, path.Join(base, m.Path), filepath.Join(modDir, filepath.FromSlash(m.Path))); err != nil {
			return err
		}
		for _, fw := range m.Firmware {
			if err := addFirmware(t, spec, fw, res); err != nil {
				return err
			}
		}
	}
	if len(res.MissingFirmware) > 0 {
		log.Info("firmware not found; drivers that need it will run degraded or fail",
			"files", res.MissingFirmware, "hint", "add --firmware-dir /lib/firmware with firmware-* packages installed")
	}
	for name, data := range map[string][]byte{
		"modules.dep":     set.modulesDep(),
		"modules.alias":   set.modulesAlias(),
		"modules.builtin": builtinList,
	} {
		if err := t.addFile(path.Join(base, name), 0o644, data); err != nil {
			return err
		}
	}
	return nil
}

func addFirmware(t *tree, spec Spec, name string, res *Result) error {
	dirs := append([]string{filepath.Join(spec.Kernel.Dir, "lib", "firmware")}, spec.FirmwareDirs...)
	for _, dir := range dirs {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if _, err := os.Stat(p); err != nil {
			continue
		}
		dst := path.Join("lib/firmware", name)
		if _, dup := t.entries[cleanName(dst)]; dup {
			return nil
		}
		res.Firmware = append(res.Firmware, name)
		return addHostFile(t, dst, p)
	}
	res.MissingFirmware = append(res.MissingFirmware, name)
	return nil
}

// addHostFile copies a host file; the permission bits are normalised (0755 if any
// execute bit is set, else 0644) so the host's umask never changes the archive.
func addHostFile(t *tree, name, hostPath string) error {
	data, err := os.ReadFile(hostPath)
	if err != nil {
		return err
	}
	fi, err := os.Stat(hostPath)
	if err != nil {
		return err
	}
	perm := os.FileMode(0o644)
	if fi.Mode().Perm()&0o111 != 0 {
		perm = 0o755
	}
	return t.addFile(name, perm, data)
}

func findPCIIDs(p string) (string, error) {
	if p != "" {
		_, err := os.Stat(p)
		return p, err
	}
	for _, c := range DefaultPCIIDs {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("pci.ids not found in %v (apt-get install pci.ids hwdata, or pass its path)", DefaultPCIIDs)
}

// compress uses fixed settings and one goroutine: zstd output is then a pure function
// of the input, which is what makes the initramfs reproducible.
func compress(data []byte) ([]byte, error) {
	var out bytes.Buffer
	enc, err := zstd.NewWriter(&out,
		zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(8<<20),
		zstd.WithEncoderCRC(true),
	)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(enc, bytes.NewReader(data)); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

type stampFile struct {
	Format int    `json:"format"`
	Result Result `json:"result"`
}

// upToDate reports whether OutDir holds a build of exactly this archive.
func upToDate(outDir string, want Result) (Result, bool) {
	data, err := os.ReadFile(filepath.Join(outDir, stampName))
	if err != nil {
		return Result{}, false
	}
	var st stampFile
	if json.Unmarshal(data, &st) != nil || st.Format != formatVersion || st.Result.ArchiveSHA256 != want.ArchiveSHA256 ||
		st.Result.KernelSHA256 != want.KernelSHA256 {
		return Result{}, false
	}
	for _, p := range []struct {
		path string
		size int64
	}{{want.InitramfsPath, st.Result.CompressedSize}, {want.KernelPath, st.Result.KernelSize}} {
		if fi, err := os.Stat(p.path); err != nil || fi.Size() != p.size {
			return Result{}, false
		}
	}
	st.Result.InitramfsPath, st.Result.KernelPath = want.InitramfsPath, want.KernelPath
	return st.Result, true
}

func writeAtomic(p string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
