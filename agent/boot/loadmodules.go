package boot

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// LoadModules loads the named kernel modules, with their dependencies, from the
// initramfs's module index. It is for drivers no device's modalias asks for, such as
// the ext4 file system the handoff step mounts the installed root with. A module that
// is built in or loaded already is fine; one the initramfs lacks is an error.
func LoadModules(log *slog.Logger, names ...string) error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return err
	}
	db, err := openModuleDB(filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:])))
	if err != nil {
		return err
	}
	loader := newDriverLoader(db, log)
	for _, name := range names {
		name = modName(name)
		if _, err := os.Stat(filepath.Join(loader.sysfs, "module", name)); err == nil {
			continue // built in, or loaded already
		}
		order := db.loadOrder([]string{name})
		if len(order) == 0 {
			return fmt.Errorf("kernel module %s is not in this initramfs: rebuild it with rivet-mkinitramfs", name)
		}
		for _, m := range order {
			if _, err := os.Stat(filepath.Join(loader.sysfs, "module", m)); err == nil {
				continue
			}
			if err := loader.insert(m); err != nil {
				return fmt.Errorf("loading kernel module %s: %w", m, err)
			}
		}
	}
	return nil
}
