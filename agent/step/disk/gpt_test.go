package disk

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// memDisk is an in-memory disk image.
type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, os.ErrInvalid
	}
	return copy(p, m[off:]), nil
}

func (m memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, os.ErrInvalid
	}
	return copy(m[off:], p), nil
}

// addGPTPartition fills entry i of the GPT headed at headerLBA and fixes both CRCs.
func addGPTPartition(t *testing.T, d memDisk, lbs, headerLBA int64, i int, first, last uint64) {
	t.Helper()
	le := binary.LittleEndian
	h := d[headerLBA*lbs : headerLBA*lbs+lbs]
	entries := int64(le.Uint64(h[72:])) * lbs
	e := d[entries+int64(i)*gptEntrySize : entries+int64(i+1)*gptEntrySize]
	copy(e[:16], bytes.Repeat([]byte{0xaf}, 16)) // any non-zero type GUID
	le.PutUint64(e[32:], first)
	le.PutUint64(e[40:], last)
	le.PutUint32(h[88:], crc32.ChecksumIEEE(d[entries:entries+gptEntryBytes]))
	le.PutUint32(h[16:], 0)
	le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:gptHeaderSize]))
}

func TestEmptyGPTParsesBackOnBothCopies(t *testing.T) {
	for _, lbs := range []int64{512, 4096} {
		size := int64(64 << 20)
		d := make(memDisk, size)
		if err := WriteEmptyGPT(d, size, int(lbs)); err != nil {
			t.Fatal(err)
		}
		last := size/lbs - 1
		for _, lba := range []int64{1, last} {
			if got := gptPartitions(d, size, lbs, lba); got == nil || len(got) != 0 {
				t.Fatalf("lbs %d: header at LBA %d: want a valid, empty table, got %v", lbs, lba, got)
			}
		}
		if d[510] != 0x55 || d[511] != 0xaa || d[446+4] != mbrTypeGPTProt {
			t.Fatalf("lbs %d: no protective MBR", lbs)
		}
		primary, backup := d[lbs:lbs+92], d[last*lbs:last*lbs+92]
		if !bytes.Equal(primary[56:72], backup[56:72]) {
			t.Fatalf("lbs %d: disk GUIDs of the two headers differ", lbs)
		}
		// A table with partitions written by the same rules is read back as extents.
		addGPTPartition(t, d, lbs, 1, 0, uint64(1<<20/lbs), uint64(9<<20/lbs-1))
		parts := OldPartitions(d, size, int(lbs))
		if len(parts) != 1 || parts[0] != (Extent{Start: 1 << 20, Length: 8 << 20}) {
			t.Fatalf("lbs %d: partitions %v", lbs, parts)
		}
	}
}

func TestOldPartitionsFallsBackToBackupGPTAndReadsMBR(t *testing.T) {
	size := int64(64 << 20)
	d := make(memDisk, size)
	if err := WriteEmptyGPT(d, size, 512); err != nil {
		t.Fatal(err)
	}
	last := size/512 - 1
	addGPTPartition(t, d, 512, last, 3, 40960, 61439)
	copy(d[512:520], "XXXXXXXX") // the primary header is damaged
	got := OldPartitions(d, size, 512)
	if len(got) != 1 || got[0] != (Extent{Start: 40960 * 512, Length: 20480 * 512}) {
		t.Fatalf("from the backup GPT: %v", got)
	}

	m := make(memDisk, size)
	m[510], m[511] = 0x55, 0xaa
	e := m[446+16:]
	e[4] = 0x83
	binary.LittleEndian.PutUint32(e[8:], 2048)
	binary.LittleEndian.PutUint32(e[12:], 1<<30) // runs past the disk: clamped
	got = OldPartitions(m, size, 512)
	if len(got) != 1 || got[0] != (Extent{Start: 1 << 20, Length: size - 1<<20}) {
		t.Fatalf("from the MBR: %v", got)
	}
}

// TestEmptyGPTIsValidForBlkid has util-linux's own prober check the table, CRCs included.
func TestEmptyGPTIsValidForBlkid(t *testing.T) {
	blkid := testenv.RequireCommand(t, "blkid")
	wipefs := testenv.RequireCommand(t, "wipefs")
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if err := WriteEmptyGPT(f, 64<<20, 512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command(blkid, "-p", "-o", "export", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PTTYPE=gpt") {
		t.Fatalf("blkid does not see a GPT: %v\n%s", err, out)
	}
	out, err = exec.Command(wipefs, "--no-act", path).CombinedOutput()
	if err != nil {
		t.Fatalf("wipefs: %v\n%s", err, out)
	}
	// wipefs lists the protective MBR, the primary and the backup header.
	if strings.Count(string(out), "gpt") < 2 || !strings.Contains(string(out), "PMBR") {
		t.Fatalf("wipefs does not see both GPT headers and the PMBR:\n%s", out)
	}
}

func TestWipePlan(t *testing.T) {
	size := int64(300 << 30)
	plan := WipePlan(size, []Extent{{Start: 4 << 20, Length: 1 << 30}, {Start: 100 << 30, Length: 200<<30 - 8<<20}})
	want := []Extent{
		{0, 8 << 20},                     // head; the first partition's start lies inside it
		{64 << 20, 4096},                 // btrfs mirror
		{4<<20 + 1<<30 - 1<<20, 1 << 20}, // end of partition 1
		{100 << 30, 1 << 20},             // start of partition 2
		{256 << 30, 4096},                // btrfs mirror
		{size - 9<<20, 9 << 20},          // end of partition 2, merged with the tail
	}
	if len(plan) != len(want) {
		t.Fatalf("plan %v\nwant %v", plan, want)
	}
	for i := range want {
		if plan[i] != want[i] {
			t.Fatalf("extent %d: %v, want %v (plan %v)", i, plan[i], want[i], plan)
		}
	}
	// A disk smaller than both end wipes is zeroed whole, once.
	if small := WipePlan(5<<20, nil); len(small) != 1 || small[0] != (Extent{0, 5 << 20}) {
		t.Fatalf("small disk: %v", small)
	}
}

func FuzzOldPartitions(f *testing.F) {
	size := int64(256 << 10)
	d := make(memDisk, size)
	if err := WriteEmptyGPT(d, size, 512); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(d[:34*512]), uint16(512))
	f.Add([]byte{}, uint16(4096))
	f.Fuzz(func(t *testing.T, head []byte, lbs uint16) {
		if lbs != 512 && lbs != 4096 {
			lbs = 512
		}
		disk := make(memDisk, size)
		copy(disk, head)
		copy(disk[size-int64(len(head))%size:], head) // the same bytes near the end, for the backup
		for _, e := range OldPartitions(disk, size, int(lbs)) {
			if e.Start <= 0 || e.Length <= 0 || e.Start+e.Length > size {
				t.Fatalf("extent %v outside a %d-byte disk", e, size)
			}
		}
	})
}
