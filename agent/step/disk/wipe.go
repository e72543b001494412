package disk

import (
	"context"
	"fmt"
	"io"
	"sort"
)

// Sizes of what the wipe zeroes. The ends of the disk carry every signature tools look
// for: MBR and primary GPT, LVM and md 1.1/1.2 superblocks, ext/xfs/btrfs primaries and
// ZFS labels 0-1 at the start; the GPT backup, md 0.90/1.0 superblocks and ZFS labels 2-3
// at the end. 8 MiB at each end covers all of them with room to spare.
const (
	EndWipe       = 8 << 20
	partitionWipe = 1 << 20 // start and end of each partition of the old table
	wipeChunk     = 1 << 20
)

// btrfsMirrors are the offsets of btrfs's superblock copies beyond the first (which lies
// inside the head wipe); blkid finds a filesystem by any of them.
var btrfsMirrors = []int64{64 << 20, 256 << 30}

// WipePlan returns the extents to zero on a disk of size bytes whose old partition table
// lists parts: both ends of the disk, both ends of every old partition, and the btrfs
// superblock mirrors; sorted and merged.
func WipePlan(size int64, parts []Extent) []Extent {
	var ext []Extent
	add := func(start, length int64) {
		start = max(start, 0)
		end := min(start+length, size)
		if end > start {
			ext = append(ext, Extent{Start: start, Length: end - start})
		}
	}
	add(0, EndWipe)
	add(size-EndWipe, EndWipe)
	for _, off := range btrfsMirrors {
		add(off, 4096)
	}
	for _, p := range parts {
		add(p.Start, partitionWipe)
		add(p.Start+p.Length-partitionWipe, partitionWipe)
	}
	return merge(ext)
}

func merge(ext []Extent) []Extent {
	sort.Slice(ext, func(i, j int) bool { return ext[i].Start < ext[j].Start })
	var out []Extent
	for _, e := range ext {
		if n := len(out); n > 0 && e.Start <= out[n-1].Start+out[n-1].Length {
			end := max(out[n-1].Start+out[n-1].Length, e.Start+e.Length)
			out[n-1].Length = end - out[n-1].Start
			continue
		}
		out = append(out, e)
	}
	return out
}

// zero writes zeros over every extent, calling progress with the bytes done so far.
func zero(ctx context.Context, w io.WriterAt, ext []Extent, progress func(done int64)) error {
	buf := make([]byte, wipeChunk)
	var done int64
	for _, e := range ext {
		for off := e.Start; off < e.Start+e.Length; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(int64(len(buf)), e.Start+e.Length-off)
			if _, err := w.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("zeroing at offset %d: %w", off, err)
			}
			off += n
			done += n
			progress(done)
		}
	}
	return nil
}

func total(ext []Extent) int64 {
	var n int64
	for _, e := range ext {
		n += e.Length
	}
	return n
}
