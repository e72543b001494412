package boot

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// moduleDB is what rivet-mkinitramfs wrote to /lib/modules/<release>: modules.dep (each
// module's dependencies, to be loaded back to front) and modules.alias (modalias glob
// patterns per module). It plays the part of modprobe's index, without modprobe.
type moduleDB struct {
	dir     string
	paths   map[string]string   // module name → path relative to dir
	deps    map[string][]string // module name → dependency names as modules.dep lists them
	aliases []aliasRule
}

type aliasRule struct {
	pattern string
	module  string
}

// modName canonicalises a module name: the kernel treats '-' and '_' alike.
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

func nameFromPath(p string) string { return modName(strings.TrimSuffix(path.Base(p), ".ko")) }

func openModuleDB(dir string) (*moduleDB, error) {
	db := &moduleDB{dir: dir}
	dep, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("module index: %w (was this initramfs built by rivet-mkinitramfs for this kernel?)", err)
	}
	defer dep.Close()
	if err := db.readDep(dep); err != nil {
		return nil, err
	}
	alias, err := os.Open(filepath.Join(dir, "modules.alias"))
	if err != nil {
		return nil, fmt.Errorf("module index: %w", err)
	}
	defer alias.Close()
	return db, db.readAlias(alias)
}

// readDep parses "kernel/a.ko: kernel/b.ko kernel/c.ko" lines.
func (db *moduleDB) readDep(r io.Reader) error {
	db.paths, db.deps = map[string]string{}, map[string][]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(mod, ".ko") {
			return fmt.Errorf("modules.dep line %d: want \"path.ko: deps\", got %q", n, line)
		}
		name := nameFromPath(mod)
		db.paths[name] = mod
		for _, d := range strings.Fields(rest) {
			db.deps[name] = append(db.deps[name], nameFromPath(d))
		}
	}
	return sc.Err()
}

// readAlias parses "alias <pattern> <module>" lines; malformed lines are errors because
// the file is ours.
func (db *moduleDB) readAlias(r io.Reader) error {
	db.aliases = nil
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return fmt.Errorf("modules.alias line %d: want \"alias PATTERN MODULE\", got %q", n, line)
		}
		if _, err := path.Match(f[1], ""); err != nil {
			return fmt.Errorf("modules.alias line %d: bad pattern %q", n, f[1])
		}
		db.aliases = append(db.aliases, aliasRule{pattern: f[1], module: modName(f[2])})
	}
	return sc.Err()
}

// match returns the modules whose alias patterns match a device's modalias, as
// modprobe would (every match, not just the first).
func (db *moduleDB) match(modalias string) []string {
	var out []string
	for _, a := range db.aliases {
		if ok, _ := path.Match(a.pattern, modalias); ok && !contains(out, a.module) {
			out = append(out, a.module)
		}
	}
	return out
}

// loadOrder expands names with their dependencies: every module appears once, after
// all of its dependencies. Names unknown to modules.dep (built in, or not shipped) are dropped.
func (db *moduleDB) loadOrder(names []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, name := range names {
		if _, ok := db.paths[name]; !ok {
			continue
		}
		deps := db.deps[name]
		for i := len(deps) - 1; i >= 0; i-- { // modules.dep lists the first to load last
			if d := deps[i]; !seen[d] {
				if _, ok := db.paths[d]; ok {
					seen[d] = true
					out = append(out, d)
				}
			}
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// driverLoader loads the drivers for the devices the kernel has found, like udev's
// "modprobe $MODALIAS" would, and remembers what it tried.
type driverLoader struct {
	db     *moduleDB
	log    *slog.Logger
	sysfs  string          // "/sys"; a test may point elsewhere
	tried  map[string]bool // loaded, already present, or failed: never tried twice
	loaded []string        // loaded by us, in order
}

func newDriverLoader(db *moduleDB, log *slog.Logger) *driverLoader {
	return &driverLoader{db: db, log: log, sysfs: "/sys", tried: map[string]bool{}}
}

// settle loads drivers until a pass over the devices loads nothing new: loading a bus
// driver (virtio_pci) creates devices (virtio0) that need another driver (virtio_net).
func (l *driverLoader) settle() []string {
	var all []string
	for pass := 0; pass < 8; pass++ {
		n := l.pass()
		if len(n) == 0 {
			break
		}
		all = append(all, n...)
	}
	return all
}

// pass reads every device's modalias once and loads the matching modules in order.
func (l *driverLoader) pass() []string {
	files, _ := filepath.Glob(filepath.Join(l.sysfs, "bus", "*", "devices", "*", "modalias"))
	seenAlias := map[string]bool{}
	var want []string
	for _, f := range files {
		alias := readTrim(f)
		if alias == "" || seenAlias[alias] {
			continue
		}
		seenAlias[alias] = true
		for _, m := range l.db.match(alias) {
			if !l.tried[m] && !contains(want, m) {
				want = append(want, m)
			}
		}
	}
	sort.Strings(want) // deterministic order, so logs from two boots compare
	var loaded []string
	for _, name := range l.db.loadOrder(want) {
		if l.tried[name] {
			continue
		}
		l.tried[name] = true
		if _, err := os.Stat(filepath.Join(l.sysfs, "module", name)); err == nil {
			continue // already loaded (or built in with parameters)
		}
		if err := l.insert(name); err != nil {
			l.log.Warn("loading kernel module failed", "module", name, "err", err)
			continue
		}
		loaded = append(loaded, name)
	}
	l.loaded = append(l.loaded, loaded...)
	return loaded
}

func (l *driverLoader) insert(name string) error {
	f, err := os.Open(filepath.Join(l.db.dir, l.db.paths[name]))
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
