package disk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/rivetmetal/rivet/agent/step"
	"github.com/rivetmetal/rivet/shared"
)

// Executor runs disk steps: find the disk by serial or WWN, make sure nothing uses it,
// wipe old signatures (both ends of the disk and of every old partition), optionally
// write an empty GPT, flush, and have the kernel re-read the partition table.
type Executor struct {
	Resolver Resolver
	// Discard the whole disk (BLKDISCARD) before zeroing: fast on SSDs and thin volumes,
	// and old data is gone rather than only unreferenced. Off by default because some
	// older SSDs discard slowly, and discard is advisory: the zeroing still happens.
	Discard bool
	Logger  *slog.Logger
}

// Run carries out one disk step. It never reports StepSkipped: wiping is cheap and an
// interrupted wipe is simply done again.
func (e *Executor) Run(ctx context.Context, s shared.Step, progress func(shared.Progress)) (shared.StepStatus, error) {
	if s.Disk == nil {
		return "", step.Permanent(fmt.Errorf("step %s has no disk payload", s.Name))
	}
	log := step.LoggerOr(e.Logger)
	d, err := e.Resolver.ResolveUnused(s.Disk.Target)
	if err != nil {
		return "", err
	}
	f, err := OpenExclusive(d, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	log = log.With("disk", d.Name, "size", d.Size)

	parts := OldPartitions(f, d.Size, d.LogicalBlockSize)
	if e.Discard {
		if err := Discard(f, 0, d.Size); err != nil {
			log.Info("discard not done; zeroing only", "err", err)
		}
	}
	plan := WipePlan(d.Size, parts)
	totalBytes := total(plan)
	log.Info("wiping disk", "old_partitions", len(parts), "bytes", totalBytes, "gpt", s.Disk.GPT)
	err = zero(ctx, f, plan, func(done int64) { progress(shared.Progress{Done: done, Total: totalBytes}) })
	if err != nil {
		return "", fmt.Errorf("wiping %s: %w", d.Path, err)
	}
	if s.Disk.GPT {
		if err := WriteEmptyGPT(f, d.Size, d.LogicalBlockSize); err != nil {
			return "", fmt.Errorf("writing GPT to %s: %w", d.Path, err)
		}
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("flushing %s: %w", d.Path, err)
	}
	if err := RereadPartitions(f); err != nil {
		// EINVAL: a device without partition support (loop without partscan); EBUSY
		// cannot happen after the guard. Neither makes the wipe less complete.
		if !errors.Is(err, unix.EINVAL) {
			log.Warn("kernel did not re-read the partition table; a reboot will", "err", err)
		}
	}
	return shared.StepSucceeded, nil
}
