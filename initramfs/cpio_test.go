package initramfs

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/internal/testenv"
)

func sampleTree(t *testing.T) *tree {
	t.Helper()
	tr := newTree()
	tr.addDir("proc")
	must(t, tr.addCharDev("dev/console", 0o600, 5, 1))
	must(t, tr.addFile("init", 0o755, []byte("#!/bin/true\n")))
	must(t, tr.addFile("lib/modules/x/kernel/a.ko", 0o644, []byte("abc"))) // 3 bytes: needs padding
	must(t, tr.addFile("/etc//empty", 0o644, nil))
	must(t, tr.addFile("lib-extra", 0o644, []byte("sorts between lib and lib/modules")))
	return tr
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	n, err := sampleTree(t).writeTo(&buf)
	must(t, err)
	if n != int64(buf.Len()) || n%4 != 0 {
		t.Fatalf("wrote %d bytes, buffer has %d; want equal and a multiple of 4", n, buf.Len())
	}
	got, err := readArchive(buf.Bytes())
	must(t, err)
	var names []string
	for i, e := range got {
		names = append(names, e.Name)
		if e.Ino != uint32(i+1) || e.UID != 0 || e.GID != 0 || e.Mtime != 0 {
			t.Errorf("%s: ino %d uid %d gid %d mtime %d; want ino %d and zeros", e.Name, e.Ino, e.UID, e.GID, e.Mtime, i+1)
		}
	}
	want := "dev dev/console etc etc/empty init lib lib-extra lib/modules lib/modules/x lib/modules/x/kernel lib/modules/x/kernel/a.ko proc"
	if strings.Join(names, " ") != want {
		t.Fatalf("entries\n got %s\nwant %s", strings.Join(names, " "), want)
	}
	for _, e := range got {
		switch e.Name {
		case "dev/console":
			if e.Mode != modeCharDev|0o600 || e.RdevMajor != 5 || e.RdevMinor != 1 {
				t.Errorf("dev/console: mode %o rdev %d:%d", e.Mode, e.RdevMajor, e.RdevMinor)
			}
		case "init":
			if e.Mode != modeRegular|0o755 || string(e.Data) != "#!/bin/true\n" {
				t.Errorf("init: mode %o data %q", e.Mode, e.Data)
			}
		case "lib/modules/x/kernel/a.ko":
			if string(e.Data) != "abc" {
				t.Errorf("a.ko: data %q", e.Data)
			}
		case "lib":
			if e.Mode != modeDir|0o755 || e.Nlink != 2 {
				t.Errorf("lib: mode %o nlink %d", e.Mode, e.Nlink)
			}
		}
	}
}

// GNU cpio is the reference reader: it must list exactly our entries.
func TestArchiveReadByGNUCpio(t *testing.T) {
	cpio := testenv.RequireCommand(t, "cpio")
	var buf bytes.Buffer
	_, err := sampleTree(t).writeTo(&buf)
	must(t, err)
	cmd := exec.Command(cpio, "-it", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	got := strings.Fields(string(out))
	if len(got) != 12 || got[0] != "dev" || got[len(got)-1] != "proc" {
		t.Fatalf("cpio -t listed %q", got)
	}
}

func TestArchiveRejectsConflicts(t *testing.T) {
	tr := newTree()
	must(t, tr.addFile("a", 0o644, []byte("1")))
	must(t, tr.addFile("a", 0o644, []byte("1"))) // same content: fine
	if err := tr.addFile("a", 0o644, []byte("2")); err == nil {
		t.Fatal("adding a different file under the same name succeeded")
	}
	if err := tr.addFile("/", 0o644, nil); err == nil {
		t.Fatal("adding the root as a file succeeded")
	}
}

func TestReadArchiveRejectsGarbage(t *testing.T) {
	var buf bytes.Buffer
	_, err := sampleTree(t).writeTo(&buf)
	must(t, err)
	good := buf.Bytes()
	for name, data := range map[string][]byte{
		"empty":       nil,
		"truncated":   good[:len(good)/2],
		"bad magic":   append([]byte("070707"), good[6:]...),
		"no trailer":  good[:len(good)-124],
		"hex garbage": append(append([]byte{}, good[:6]...), bytes.Repeat([]byte("z"), 200)...),
	} {
		if _, err := readArchive(data); err == nil {
			t.Errorf("%s: readArchive accepted it", name)
		}
	}
}

func FuzzReadArchive(f *testing.F) {
	var buf bytes.Buffer
	tr := newTree()
	_ = tr.addFile("init", 0o755, []byte("x"))
	_, _ = tr.writeTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := readArchive(data)
		if err != nil {
			return
		}
		// Whatever parses must survive a rewrite and parse back to the same names.
		again := newTree()
		for _, e := range entries {
			if e.Mode&modeTypeMask == modeRegular {
				if again.addFile(e.Name, 0o644, e.Data) != nil {
					return
				}
			}
		}
		var out bytes.Buffer
		if _, err := again.writeTo(&out); err != nil {
			t.Fatal(err)
		}
		if _, err := readArchive(out.Bytes()); err != nil {
			t.Fatalf("rewritten archive does not parse: %v", err)
		}
	})
}
