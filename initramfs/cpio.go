package initramfs

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// The newc ("new ASCII") cpio format is what the kernel unpacks into the initial rootfs:
// a 110-byte hex header, the NUL-terminated name, padding to 4 bytes, the data, padding
// to 4 bytes; the archive ends with an entry named TRAILER!!!. See the kernel's
// Documentation/driver-api/early-userspace/buffer-format.rst.

const (
	newcMagic     = "070701"
	newcHeaderLen = 110
	newcTrailer   = "TRAILER!!!"
)

// File type bits as cpio stores them (the same values as st_mode).
const (
	modeTypeMask = 0o170000
	modeDir      = 0o040000
	modeRegular  = 0o100000
	modeSymlink  = 0o120000
	modeCharDev  = 0o020000
)

// entry is one file in the archive. Data holds a regular file's contents or a
// symlink's target.
type entry struct {
	Name      string // relative, slash-separated, no leading "/" (e.g. "lib/modules")
	Mode      uint32 // type bits | permission bits
	Data      []byte
	RdevMajor uint32
	RdevMinor uint32
}

// tree collects entries by name and writes them as a reproducible archive: sorted by
// name (so every directory precedes its contents), owner 0:0, mtime 0, inode numbers
// counted from 1 in that order, and only the permission bits the caller chose.
type tree struct {
	entries map[string]*entry
}

func newTree() *tree { return &tree{entries: map[string]*entry{}} }

// addDir adds a directory and its parents.
func (t *tree) addDir(name string) {
	name = cleanName(name)
	for name != "." && name != "" {
		if _, ok := t.entries[name]; !ok {
			t.entries[name] = &entry{Name: name, Mode: modeDir | 0o755}
		}
		name = path.Dir(name)
	}
}

// addFile adds a regular file (and its parent directories) with permissions perm.
func (t *tree) addFile(name string, perm fs.FileMode, data []byte) error {
	return t.add(&entry{Name: cleanName(name), Mode: modeRegular | uint32(perm.Perm()), Data: data})
}

// addCharDev adds a character device node such as dev/console.
func (t *tree) addCharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return t.add(&entry{Name: cleanName(name), Mode: modeCharDev | uint32(perm.Perm()), RdevMajor: major, RdevMinor: minor})
}

func (t *tree) add(e *entry) error {
	if e.Name == "." || e.Name == "" || strings.HasPrefix(e.Name, "../") {
		return fmt.Errorf("archive entry %q: want a path inside the archive", e.Name)
	}
	if old, ok := t.entries[e.Name]; ok && !bytes.Equal(old.Data, e.Data) {
		return fmt.Errorf("archive entry %q added twice with different contents", e.Name)
	}
	t.addDir(path.Dir(e.Name))
	t.entries[e.Name] = e
	return nil
}

func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// writeTo writes the archive in newc format and returns the number of bytes written.
func (t *tree) writeTo(w io.Writer) (int64, error) {
	names := make([]string, 0, len(t.entries))
	for name := range t.entries {
		names = append(names, name)
	}
	sort.Strings(names)
	cw := &countingWriter{w: w}
	for i, name := range names {
		if err := writeEntry(cw, uint32(i+1), t.entries[name]); err != nil {
			return cw.n, err
		}
	}
	if err := writeEntry(cw, 0, &entry{Name: newcTrailer}); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

func writeEntry(w *countingWriter, ino uint32, e *entry) error {
	nlink := uint32(1)
	if e.Mode&modeTypeMask == modeDir {
		nlink = 2
	}
	if e.Name == newcTrailer {
		nlink = 1
	}
	fields := []uint32{
		ino, e.Mode, 0 /*uid*/, 0 /*gid*/, nlink, 0, /*mtime*/
		uint32(len(e.Data)), 0, 0 /*dev*/, e.RdevMajor, e.RdevMinor,
		uint32(len(e.Name) + 1), 0, /*check*/
	}
	var hdr bytes.Buffer
	hdr.WriteString(newcMagic)
	for _, f := range fields {
		fmt.Fprintf(&hdr, "%08x", f)
	}
	hdr.WriteString(e.Name)
	hdr.WriteByte(0)
	hdr.Write(make([]byte, pad4(hdr.Len())))
	if _, err := w.Write(hdr.Bytes()); err != nil {
		return err
	}
	if _, err := w.Write(e.Data); err != nil {
		return err
	}
	_, err := w.Write(make([]byte, pad4(len(e.Data))))
	return err
}

func pad4(n int) int { return (4 - n%4) % 4 }

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// archived is an entry as read back, with the header fields Build fixes.
type archived struct {
	entry
	Ino, UID, GID, Nlink, Mtime uint32
}

// readArchive parses a newc archive back into entries (without the trailer), so tests
// can check what Build wrote; it rejects anything malformed instead of guessing.
func readArchive(data []byte) ([]archived, error) {
	var out []archived
	off := 0
	for {
		if len(data)-off < newcHeaderLen {
			return nil, fmt.Errorf("cpio: truncated header at offset %d", off)
		}
		hdr := data[off : off+newcHeaderLen]
		if string(hdr[:6]) != newcMagic {
			return nil, fmt.Errorf("cpio: bad magic %q at offset %d (want newc %s)", hdr[:6], off, newcMagic)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("cpio: bad header field %d at offset %d", i, off)
			}
			f[i] = uint32(v)
		}
		mode, size, rmaj, rmin, nameSize := f[1], int(f[6]), f[9], f[10], int(f[11])
		off += newcHeaderLen
		if nameSize < 1 || nameSize > len(data)-off {
			return nil, fmt.Errorf("cpio: bad name size %d at offset %d", nameSize, off)
		}
		name := string(data[off : off+nameSize-1])
		if data[off+nameSize-1] != 0 {
			return nil, fmt.Errorf("cpio: name %q not NUL-terminated", name)
		}
		off += nameSize + pad4(newcHeaderLen+nameSize)
		if name == newcTrailer {
			return out, nil
		}
		if size < 0 || off > len(data) || size > len(data)-off {
			return nil, fmt.Errorf("cpio: entry %q: data runs past the end", name)
		}
		out = append(out, archived{
			entry: entry{Name: name, Mode: mode, Data: data[off : off+size], RdevMajor: rmaj, RdevMinor: rmin},
			Ino:   f[0], UID: f[2], GID: f[3], Nlink: f[4], Mtime: f[5],
		})
		off += size + pad4(size)
	}
}
