// Package inventory finds out what hardware a machine has: DMI identity, processors,
// memory, disks, network interfaces and PCI devices, plus live load and uptime.
//
// It runs in two very different places: in the RAM agent (an initramfs with no udev
// database, no tools and sometimes odd firmware) and under systemd on an installed OS.
// So every section is collected on its own, a failing or panicking section records its
// error in Inventory.Errors and never costs the others, and whatever ghw cannot see
// without udev (disk serials, WWNs, file-system types and labels) is read from sysfs and
// the devices themselves.
package inventory

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/rivetmetal/rivet/shared"
)

// Options tunes a collection. The zero value inventories the local machine.
type Options struct {
	// SystemUUID replaces the DMI system UUID: for boards whose firmware ships a bogus
	// or duplicated UUID, and for simulated machines. Operators set it with the agent's
	// --system-uuid flag.
	SystemUUID string
	// PCIIDsPath is the pci.ids file that names PCI vendors and devices. Empty means the
	// first of the usual places (see pciIDsPaths) that exists.
	PCIIDsPath string
	// IncludeLoop lists loop devices that have a backing file as disks. Off on real
	// machines; the disk executor's tests turn it on to work on loop devices.
	IncludeLoop bool
	// Logger receives section failures (warn) and timings (debug). Nil discards.
	Logger *slog.Logger

	// sysRoot and devRoot replace /sys and /dev, for tests on fake trees.
	sysRoot string
	devRoot string
}

// defaultTimeout bounds a collection whose context has no deadline: a sysfs read on a
// dying device can block for minutes, and the agent must still register.
const defaultTimeout = 30 * time.Second

// section is one independently collected part of the inventory. collect returns a
// function that stores what it found (possibly partial, even with an error), so that a
// section which outlives the deadline never writes into an inventory already returned.
type section struct {
	name    string
	collect func(ctx context.Context) (fill func(*shared.Inventory), err error)
}

type sectionResult struct {
	name string
	fill func(*shared.Inventory)
	err  error
}

// Collect inventories the machine. It never fails as a whole: each section that could
// not be read is left empty (or partial) and its error is recorded in Errors under the
// section's name.
func Collect(ctx context.Context, opts Options) *shared.Inventory {
	c := newCollector(opts)
	return c.run(ctx, c.sections())
}

// collector holds what every section needs.
type collector struct {
	opts Options
	log  *slog.Logger
	sys  sysfs
	dev  string
}

func newCollector(opts Options) *collector {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sysRoot, devRoot := opts.sysRoot, opts.devRoot
	if sysRoot == "" {
		sysRoot = "/sys"
	}
	if devRoot == "" {
		devRoot = "/dev"
	}
	return &collector{opts: opts, log: log, sys: sysfs{root: sysRoot}, dev: devRoot}
}

func (c *collector) sections() []section {
	return []section{
		{shared.SectionSystem, c.system},
		{shared.SectionCPU, c.cpu},
		{shared.SectionMemory, c.memory},
		{shared.SectionDisks, c.disks},
		{shared.SectionNICs, c.nics},
		{shared.SectionPCI, c.pci},
		{shared.SectionLoad, c.load},
	}
}

// run collects the sections concurrently and assembles the inventory.
func (c *collector) run(ctx context.Context, sections []section) *shared.Inventory {
	start := time.Now()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	results := make(chan sectionResult, len(sections)) // buffered: late sections never block
	for _, s := range sections {
		go func() { results <- runSection(ctx, s) }()
	}

	inv := &shared.Inventory{CollectedAt: start.UTC()}
	pending := map[string]bool{}
	for _, s := range sections {
		pending[s.name] = true
	}
	for len(pending) > 0 {
		select {
		case r := <-results:
			delete(pending, r.name)
			if r.fill != nil {
				r.fill(inv)
			}
			if r.err != nil {
				c.recordError(inv, r.name, r.err)
			}
		case <-ctx.Done():
			for name := range pending {
				c.recordError(inv, name, fmt.Errorf("not finished when collection stopped: %w", ctx.Err()))
			}
			pending = nil
		}
	}
	nameNICs(inv)
	if c.opts.SystemUUID != "" {
		inv.System.UUID = strings.TrimSpace(c.opts.SystemUUID)
	}
	// A machine with more than the coordinator keeps (hundreds of partitions, say) still
	// registers: the excess is trimmed and noted in the inventory's errors.
	for _, note := range inv.Fit() {
		c.log.Warn("inventory trimmed to the coordinator's limits", "what", note)
	}
	inv.TookMillis = time.Since(start).Milliseconds()
	c.log.Debug("inventory collected", "took", time.Since(start), "errors", len(inv.Errors))
	return inv
}

// runSection runs one section and turns a panic (ghw has panicked on odd sysfs trees)
// into that section's error.
func runSection(ctx context.Context, s section) (res sectionResult) {
	res.name = s.name
	defer func() {
		if r := recover(); r != nil {
			res.fill = nil
			res.err = fmt.Errorf("panic while reading %s: %v (please report this with the "+
				"machine's model; stack: %s)", s.name, r, firstFrames(debug.Stack()))
		}
	}()
	res.fill, res.err = s.collect(ctx)
	return res
}

func (c *collector) recordError(inv *shared.Inventory, name string, err error) {
	if inv.Errors == nil {
		inv.Errors = map[string]string{}
	}
	msg := err.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	inv.Errors[name] = msg
	c.log.Warn("inventory section failed; the rest of the inventory is kept", "section", name, "err", err)
}

// firstFrames keeps the panicking frame of a stack and little else: enough to find
// the bug, short enough to travel in the inventory.
func firstFrames(stack []byte) string {
	lines := strings.Split(string(stack), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic(") && i+3 < len(lines) {
			return strings.TrimSpace(lines[i+2]) + " " + strings.TrimSpace(lines[i+3])
		}
	}
	if len(lines) > 6 {
		lines = lines[:6]
	}
	return strings.Join(lines, " | ")
}

// clean trims a firmware or sysfs string and drops the placeholders ghw uses for
// "could not tell", so that an empty field always means unknown.
func clean(s string) string {
	s = strings.TrimSpace(strings.Trim(s, "\x00"))
	if strings.EqualFold(s, "unknown") {
		return ""
	}
	return truncate(s, 1024)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// fileExists reports whether path exists (any kind of file).
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
