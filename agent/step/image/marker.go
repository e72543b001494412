package image

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"
)

// The marker records "this disk holds the image with this SHA-256 and size, verified",
// so that a rerun of the image step (after a lost report or an agent restart) skips a
// 1 GiB download. It is one 4 KiB block at a fixed place near the end of the disk:
//
//   - outside the image (raw images are far smaller than disks; an image that reaches the
//     marker's block gets no marker and is simply written again on a rerun),
//   - outside the GPT backup (last 33 sectors), so that the disk step's or the image's own
//     partition table never collides with it,
//   - inside the disk step's tail wipe (last 8 MiB), so that a wipe always invalidates it,
//   - tied to the disk, not to tmpfs, so it survives reboots and power loss.
//
// The block is zeroed before the first image byte is written and written only after the
// whole image is on stable storage and its digest matched, so a valid marker never
// describes a partly written disk. Once the installed OS grows its root partition into the
// free space, the marker is overwritten, which is right: the disk no longer holds the
// pristine image.
const (
	markerMagic   = "RIVETIMG"
	markerVersion = 1
	markerSize    = 4096
	markerFromEnd = 1 << 20 // the block starts 1 MiB before the end of the disk
)

// marker is the decoded marker block.
type marker struct {
	SHA256    [32]byte
	Size      int64
	WrittenAt time.Time
}

// markerOffset is where the marker block starts on a disk of size bytes.
func markerOffset(size int64) int64 {
	return (size - markerFromEnd) &^ (markerSize - 1)
}

// encode lays the marker out in one block: magic, version, sha256, size, time, CRC32.
func (m marker) encode(block []byte) {
	clear(block[:markerSize])
	le := binary.LittleEndian
	copy(block[0:8], markerMagic)
	le.PutUint32(block[8:], markerVersion)
	copy(block[16:48], m.SHA256[:])
	le.PutUint64(block[48:], uint64(m.Size))
	le.PutUint64(block[56:], uint64(m.WrittenAt.Unix()))
	le.PutUint32(block[64:], crc32.ChecksumIEEE(block[:64]))
}

var errNoMarker = errors.New("no valid image marker")

// decodeMarker parses a marker block; errNoMarker when it is not one.
func decodeMarker(block []byte) (marker, error) {
	le := binary.LittleEndian
	if len(block) < 68 || !bytes.Equal(block[:8], []byte(markerMagic)) ||
		le.Uint32(block[8:]) != markerVersion || le.Uint32(block[64:]) != crc32.ChecksumIEEE(block[:64]) {
		return marker{}, errNoMarker
	}
	var m marker
	copy(m.SHA256[:], block[16:48])
	m.Size = int64(le.Uint64(block[48:]))
	m.WrittenAt = time.Unix(int64(le.Uint64(block[56:])), 0).UTC()
	if m.Size <= 0 {
		return marker{}, errNoMarker
	}
	return m, nil
}

// readMarker reads the marker of a disk of size bytes; block must be an aligned buffer of
// markerSize bytes (the disk may be open with O_DIRECT).
func readMarker(r io.ReaderAt, size int64, block []byte) (marker, error) {
	if size < 2*markerFromEnd {
		return marker{}, errNoMarker
	}
	if _, err := r.ReadAt(block[:markerSize], markerOffset(size)); err != nil {
		return marker{}, err
	}
	m, err := decodeMarker(block)
	if err != nil || m.Size > markerOffset(size) {
		return marker{}, errNoMarker
	}
	return m, nil
}

// matches reports whether the marker describes the image with hex digest sha.
func (m marker) matches(sha string) bool {
	return hex.EncodeToString(m.SHA256[:]) == sha
}

// invalidateMarker zeroes the marker block and flushes it, before any image byte is
// written: from here on, until writeMarker, the disk claims no image.
func invalidateMarker(f *os.File, size int64, block []byte) error {
	if size < 2*markerFromEnd {
		return nil
	}
	clear(block[:markerSize])
	if _, err := f.WriteAt(block[:markerSize], markerOffset(size)); err != nil {
		return fmt.Errorf("clearing the image marker: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("clearing the image marker: %w", err)
	}
	return nil
}

// writeMarker records a verified image of n bytes, unless the image reaches the marker.
func writeMarker(f *os.File, size, n int64, sum [32]byte, block []byte) error {
	if size < 2*markerFromEnd || n > markerOffset(size) {
		return fmt.Errorf("the image (%d bytes) reaches the marker block at %d", n, markerOffset(size))
	}
	marker{SHA256: sum, Size: n, WrittenAt: time.Now()}.encode(block)
	if _, err := f.WriteAt(block[:markerSize], markerOffset(size)); err != nil {
		return err
	}
	return f.Sync()
}

// zeroHead zeroes the first MiB (partition table and boot code) of a disk whose image
// failed verification, so that it cannot boot; best effort.
func zeroHead(f *os.File, block []byte) {
	clear(block[:markerSize])
	for off := int64(0); off < 1<<20; off += markerSize {
		if _, err := f.WriteAt(block[:markerSize], off); err != nil {
			return
		}
	}
	_ = f.Sync()
}
