package initramfs

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultModules are the NIC and disk drivers the RAM agent needs on common servers and
// on qemu. Their dependencies are added by Build; modules built into the kernel are skipped.
var DefaultModules = []string{
	// virtual machines
	"virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi",
	"virtio_rng", // seeds the kernel's RNG in VMs without RDRAND (qemu TCG)
	// NICs
	"e1000", "e1000e", "igb", "ixgbe", "i40e", "ice", "mlx5_core", "bnxt_en",
	// disks
	"nvme", "ahci", "sd_mod",
	// the installed root, which the handoff step mounts (loaded on demand, no modalias);
	// ext4 asks the crypto API for crc32c at mount time, which modules.dep cannot show
	"ext4", "crc32c_generic",
}

// module is one kernel module as its ELF .modinfo section describes it.
type module struct {
	Name     string   // canonical name: '-' written as '_' (what /sys/module shows)
	Path     string   // relative to lib/modules/<release>, e.g. "kernel/drivers/net/virtio_net.ko"
	Depends  []string // canonical names of modules whose symbols it uses
	Aliases  []string // modalias glob patterns, e.g. "pci:v00001AF4d00001000sv*sd*bc*sc*i*"
	Firmware []string // firmware file names relative to /lib/firmware
}

// modName canonicalises a module name: the kernel treats '-' and '_' alike.
func modName(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "-", "_") }

// parseModinfo splits a .modinfo section: NUL-separated "key=value" strings (with
// NUL padding between them). Entries without '=' are ignored.
func parseModinfo(section []byte) (keys, values []string) {
	for _, field := range bytes.Split(section, []byte{0}) {
		k, v, ok := bytes.Cut(field, []byte{'='})
		if !ok || len(k) == 0 {
			continue
		}
		keys = append(keys, string(k))
		values = append(values, string(v))
	}
	return keys, values
}

// readModule reads the .modinfo section of modDir/rel. The .deb ships no modules.dep, so
// this is where dependency, alias and firmware facts come from.
func readModule(modDir, rel string) (*module, error) {
	f, err := elf.Open(filepath.Join(modDir, rel))
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", rel, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section (not a kernel module?)", rel)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: reading .modinfo: %w", rel, err)
	}
	m := &module{Name: modName(strings.TrimSuffix(filepath.Base(rel), ".ko")), Path: rel}
	keys, values := parseModinfo(data)
	for i, k := range keys {
		v := values[i]
		switch k {
		case "name":
			m.Name = modName(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = modName(d); d != "" {
					m.Depends = append(m.Depends, d)
				}
			}
		case "alias":
			m.Aliases = append(m.Aliases, v)
		case "firmware":
			m.Firmware = append(m.Firmware, v)
		}
	}
	return m, nil
}

// indexModules maps every module name in modDir/kernel to its relative path. Only file
// names are read here; .modinfo is parsed only for the modules Build picks.
func indexModules(modDir string) (map[string]string, error) {
	index := map[string]string{}
	root := filepath.Join(modDir, "kernel")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return nil
		}
		rel, err := filepath.Rel(modDir, p)
		if err != nil {
			return err
		}
		index[modName(strings.TrimSuffix(d.Name(), ".ko"))] = filepath.ToSlash(rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing kernel modules: %w", err)
	}
	if len(index) == 0 {
		return nil, fmt.Errorf("no .ko files under %s (compressed modules are not supported)", root)
	}
	return index, nil
}

// readBuiltin reads modules.builtin: the modules compiled into the kernel image.
func readBuiltin(modDir string) (map[string]bool, []byte, error) {
	data, err := os.ReadFile(filepath.Join(modDir, "modules.builtin"))
	if err != nil {
		return nil, nil, fmt.Errorf("kernel tree: %w", err)
	}
	builtin := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			builtin[modName(strings.TrimSuffix(filepath.Base(line), ".ko"))] = true
		}
	}
	return builtin, data, sc.Err()
}

// moduleSet is the closure of the wanted modules over "depends", in load order.
type moduleSet struct {
	Ordered []*module // every module after all of its dependencies
	Builtin []string  // wanted modules that are built into the kernel (nothing to load)
}

// moduleSource yields a module's facts by name; readModule against a kernel tree in
// Build, a map in tests.
type moduleSource func(name string) (*module, error)

// resolveModules computes the dependency closure of want and orders it so that each
// module comes after everything it depends on. The order is deterministic: wanted
// modules are visited in sorted order and dependencies in the order modinfo lists them.
func resolveModules(want []string, builtin map[string]bool, source moduleSource) (moduleSet, error) {
	var set moduleSet
	state := map[string]int{} // 0 unseen, 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		case 2:
			return nil
		}
		state[name] = 1
		m, err := source(name)
		if err != nil {
			return err
		}
		for _, dep := range m.Depends {
			if builtin[dep] {
				continue
			}
			if err := visit(dep, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		set.Ordered = append(set.Ordered, m)
		return nil
	}
	names := make([]string, 0, len(want))
	for _, w := range want {
		names = append(names, modName(w))
	}
	sort.Strings(names)
	for _, name := range names {
		if builtin[name] {
			if len(set.Builtin) == 0 || set.Builtin[len(set.Builtin)-1] != name {
				set.Builtin = append(set.Builtin, name)
			}
			continue
		}
		if err := visit(name, nil); err != nil {
			return moduleSet{}, err
		}
	}
	return set, nil
}

// modulesDep renders modules.dep the way depmod does: for each module, all of its direct
// and indirect dependencies, listed so that loading from the last to the first (then the
// module itself) satisfies every symbol. Lines are sorted by module path.
func (s moduleSet) modulesDep() []byte {
	pos := map[string]int{}
	byName := map[string]*module{}
	for i, m := range s.Ordered {
		pos[m.Name] = i
		byName[m.Name] = m
	}
	var lines []string
	for _, m := range s.Ordered {
		closure := map[string]bool{}
		var walk func(*module)
		walk = func(x *module) {
			for _, d := range x.Depends {
				if dm, ok := byName[d]; ok && !closure[d] {
					closure[d] = true
					walk(dm)
				}
			}
		}
		walk(m)
		deps := make([]*module, 0, len(closure))
		for d := range closure {
			deps = append(deps, byName[d])
		}
		// Latest in load order first: modprobe loads the list back to front.
		sort.Slice(deps, func(i, j int) bool { return pos[deps[i].Name] > pos[deps[j].Name] })
		line := m.Path + ":"
		for _, d := range deps {
			line += " " + d.Path
		}
		lines = append(lines, line)
	}
	sort.Strings(lines)
	return []byte(strings.Join(lines, "\n") + "\n")
}

// modulesAlias renders modules.alias ("alias <pattern> <module>"), sorted by module
// name and then in .modinfo order, so the agent can load drivers by modalias.
func (s moduleSet) modulesAlias() []byte {
	mods := append([]*module(nil), s.Ordered...)
	sort.Slice(mods, func(i, j int) bool { return mods[i].Name < mods[j].Name })
	var b strings.Builder
	b.WriteString("# Aliases extracted from modules themselves.\n")
	for _, m := range mods {
		for _, a := range m.Aliases {
			fmt.Fprintf(&b, "alias %s %s\n", a, m.Name)
		}
	}
	return []byte(b.String())
}
