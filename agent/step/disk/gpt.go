package disk

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
)

// GPT layout constants (UEFI 2.10, section 5.3). Rivet writes the standard 128 entries of
// 128 bytes each, which every tool and firmware expects.
const (
	gptSignature   = "EFI PART"
	gptRevision    = 0x00010000
	gptHeaderSize  = 92
	gptEntries     = 128
	gptEntrySize   = 128
	gptEntryBytes  = gptEntries * gptEntrySize // 16 KiB
	mbrTypeGPTProt = 0xEE
)

// Extent is a byte range of a disk.
type Extent struct{ Start, Length int64 }

// gptLayout computes where an empty GPT goes on a disk of size bytes with logical block
// size lbs. It returns the LBAs that the headers and entry arrays use.
type gptLayout struct {
	lbs                      int64
	lastLBA                  int64
	entrySectors             int64
	firstUsable, lastUsable  int64
	primaryEntries, backupEn int64
}

func newGPTLayout(size int64, lbs int) (gptLayout, error) {
	l := gptLayout{lbs: int64(lbs)}
	l.lastLBA = size/l.lbs - 1
	l.entrySectors = (gptEntryBytes + l.lbs - 1) / l.lbs
	l.primaryEntries = 2
	l.backupEn = l.lastLBA - l.entrySectors
	l.firstUsable = 2 + l.entrySectors
	l.lastUsable = l.backupEn - 1
	if l.lastUsable <= l.firstUsable {
		return l, errors.New("disk too small for a GPT")
	}
	return l, nil
}

// WriteEmptyGPT writes a protective MBR, a primary GPT header with an empty entry array,
// and the backup entry array and header at the end of the disk: the equivalent of
// `sgdisk --clear`. The disk GUID is random.
func WriteEmptyGPT(w io.WriterAt, size int64, lbs int) error {
	l, err := newGPTLayout(size, lbs)
	if err != nil {
		return err
	}
	var guid [16]byte
	if _, err := rand.Read(guid[:]); err != nil {
		return err
	}
	// A version 4 GUID in the mixed-endian form GPT stores: the version nibble lives in
	// the high byte of the third field (stored little-endian, so byte 7).
	guid[7] = guid[7]&0x0f | 0x40
	guid[8] = guid[8]&0x3f | 0x80

	entries := make([]byte, l.entrySectors*l.lbs) // all zero: no partitions
	entriesCRC := crc32.ChecksumIEEE(entries[:gptEntryBytes])

	primary := l.header(1, l.lastLBA, l.primaryEntries, guid, entriesCRC)
	backup := l.header(l.lastLBA, 1, l.backupEn, guid, entriesCRC)

	writes := []struct {
		lba  int64
		data []byte
	}{
		{0, l.protectiveMBR()},
		{1, primary},
		{l.primaryEntries, entries},
		{l.backupEn, entries},
		{l.lastLBA, backup},
	}
	for _, wr := range writes {
		if _, err := w.WriteAt(wr.data, wr.lba*l.lbs); err != nil {
			return err
		}
	}
	return nil
}

// header returns one GPT header sector.
func (l gptLayout) header(my, alternate, entriesLBA int64, guid [16]byte, entriesCRC uint32) []byte {
	b := make([]byte, l.lbs)
	le := binary.LittleEndian
	copy(b[0:8], gptSignature)
	le.PutUint32(b[8:], gptRevision)
	le.PutUint32(b[12:], gptHeaderSize)
	le.PutUint64(b[24:], uint64(my))
	le.PutUint64(b[32:], uint64(alternate))
	le.PutUint64(b[40:], uint64(l.firstUsable))
	le.PutUint64(b[48:], uint64(l.lastUsable))
	copy(b[56:72], guid[:])
	le.PutUint64(b[72:], uint64(entriesLBA))
	le.PutUint32(b[80:], gptEntries)
	le.PutUint32(b[84:], gptEntrySize)
	le.PutUint32(b[88:], entriesCRC)
	le.PutUint32(b[16:], crc32.ChecksumIEEE(b[:gptHeaderSize])) // with its own CRC field zero
	return b
}

// protectiveMBR covers the whole disk with one partition of type 0xEE so that tools that
// only know MBR see the disk as used.
func (l gptLayout) protectiveMBR() []byte {
	b := make([]byte, l.lbs)
	e := b[446:462]
	e[1], e[2], e[3] = 0x00, 0x02, 0x00 // CHS of LBA 1
	e[4] = mbrTypeGPTProt
	e[5], e[6], e[7] = 0xff, 0xff, 0xff
	binary.LittleEndian.PutUint32(e[8:], 1)
	binary.LittleEndian.PutUint32(e[12:], uint32(min(l.lastLBA, 0xffffffff)))
	b[510], b[511] = 0x55, 0xaa
	return b
}

// OldPartitions reads the partition table the disk carries now (GPT primary, else GPT
// backup, plus MBR primaries) and returns each partition's extent, clamped to the disk.
// The disk step wipes the start and end of each, so that a filesystem or RAID member from
// the old layout cannot reappear when a new table happens to reuse its offsets. A damaged
// or absent table yields fewer extents, never an error: the result only adds wiping.
func OldPartitions(r io.ReaderAt, size int64, lbs int) []Extent {
	out := mbrPartitions(r, size)
	l, err := newGPTLayout(size, lbs)
	if err != nil {
		return out
	}
	gpt := gptPartitions(r, size, int64(lbs), 1)
	if gpt == nil {
		gpt = gptPartitions(r, size, int64(lbs), l.lastLBA)
	}
	return append(out, gpt...)
}

func mbrPartitions(r io.ReaderAt, size int64) []Extent {
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, 0); err != nil || b[510] != 0x55 || b[511] != 0xaa {
		return nil
	}
	var out []Extent
	for i := 0; i < 4; i++ {
		e := b[446+16*i : 462+16*i]
		typ := e[4]
		start := int64(binary.LittleEndian.Uint32(e[8:])) * 512
		length := int64(binary.LittleEndian.Uint32(e[12:])) * 512
		if typ == 0 || typ == mbrTypeGPTProt || length == 0 {
			continue
		}
		if ext, ok := clamp(start, length, size); ok {
			out = append(out, ext)
		}
	}
	return out
}

// gptPartitions parses the GPT whose header is at headerLBA; nil when it is not a valid
// header. The entry array is used even if its CRC is wrong: wiping more is harmless.
func gptPartitions(r io.ReaderAt, size, lbs, headerLBA int64) []Extent {
	h := make([]byte, lbs)
	if _, err := r.ReadAt(h, headerLBA*lbs); err != nil || !bytes.Equal(h[:8], []byte(gptSignature)) {
		return nil
	}
	le := binary.LittleEndian
	hsize := le.Uint32(h[12:])
	if hsize < gptHeaderSize || int64(hsize) > lbs {
		return nil
	}
	want := le.Uint32(h[16:])
	check := append([]byte(nil), h[:hsize]...)
	le.PutUint32(check[16:], 0)
	if crc32.ChecksumIEEE(check) != want {
		return nil
	}
	entriesLBA := int64(le.Uint64(h[72:]))
	count := int64(le.Uint32(h[80:]))
	esize := int64(le.Uint32(h[84:]))
	if esize < 128 || esize > 4096 || count > 1024 || entriesLBA < 0 || entriesLBA > size/lbs {
		return nil
	}
	arr := make([]byte, count*esize)
	if _, err := r.ReadAt(arr, entriesLBA*lbs); err != nil {
		return nil
	}
	out := []Extent{}
	for i := int64(0); i < count; i++ {
		e := arr[i*esize : (i+1)*esize]
		if allZero(e[:16]) { // unused entry: type GUID zero
			continue
		}
		first, last := int64(le.Uint64(e[32:])), int64(le.Uint64(e[40:]))
		if first < 0 || last < first || last > size/lbs {
			continue
		}
		if ext, ok := clamp(first*lbs, (last-first+1)*lbs, size); ok {
			out = append(out, ext)
		}
	}
	return out
}

func clamp(start, length, size int64) (Extent, bool) {
	if start <= 0 || start >= size || length <= 0 {
		return Extent{}, false
	}
	return Extent{Start: start, Length: min(length, size-start)}, true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
