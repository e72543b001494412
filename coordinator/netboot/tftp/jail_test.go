package tftp

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestPathTraversalRefused(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "boot")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(root, "sub"), outside, filepath.Join(root, "dir")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := []byte("machine tokens live here")
	must(t, os.WriteFile(filepath.Join(outside, "secret"), secret, 0o644))
	ts := startServer(t, Config{Root: root})
	want := ts.writeFile(t, "sub/ok.bin", 1000)
	must(t, os.Symlink("../outside/secret", filepath.Join(root, "escape")))
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "absolute")))
	must(t, os.Symlink("sub/ok.bin", filepath.Join(root, "inside")))
	must(t, os.Symlink("../../outside", filepath.Join(root, "sub", "dirlink")))
	must(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))

	refused := map[string]errorCode{
		"../outside/secret":         codeAccessViolation,
		"sub/../../outside/secret":  codeAccessViolation,
		"/etc/passwd":               codeAccessViolation,
		"//etc/passwd":              codeAccessViolation,
		"sub\\ok.bin":               codeAccessViolation,
		"..\\outside\\secret":       codeAccessViolation,
		"escape":                    codeAccessViolation,
		"absolute":                  codeAccessViolation,
		"sub/dirlink/secret":        codeAccessViolation,
		"sub/ok.bin/x":              codeAccessViolation,
		"sub/ok\x01.bin":            codeAccessViolation,
		"sub/ok.bin\x7f":            codeAccessViolation,
		"..":                        codeAccessViolation,
		"missing.bin":               codeFileNotFound,
		"dir":                       codeFileNotFound,
		".":                         codeFileNotFound,
		"fifo":                      codeFileNotFound,
		"sub/../sub/../sub/missing": codeAccessViolation,
	}
	for name, code := range refused {
		t.Run(name, func(t *testing.T) {
			_, err := Fetch(testContext(t), ts.addr, name, FetchOptions{})
			var re *RemoteError
			if !errors.As(err, &re) || re.Code != uint16(code) {
				t.Fatalf("fetch %q: %v, want ERROR %d", name, err, code)
			}
			if bytes.Contains([]byte(re.Message), []byte(base)) {
				t.Errorf("error message %q reveals the server's paths", re.Message)
			}
		})
	}
	for _, name := range []string{"sub/ok.bin", "inside", "sub/./ok.bin", "sub//ok.bin"} {
		got, err := Fetch(testContext(t), ts.addr, name, FetchOptions{})
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("fetch %q: %v", name, err)
		}
	}
}

func TestNULInRequestNeverReachesTheFilesystem(t *testing.T) {
	// A NUL ends the filename field, so "ok.bin\x00../x" is the file "ok.bin" in mode
	// "../x": refused as a bad mode, not opened.
	ts := startServer(t, Config{})
	ts.writeFile(t, "ok.bin", 10)
	c := newRawClient(t, ts.addr)
	c.send([]byte("\x00\x01ok.bin\x00../x\x00octet\x00"))
	c.expectError(codeIllegalOperation)
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{
		"undionly.kpxe":   "undionly.kpxe",
		"efi//ipxe.efi":   "efi/ipxe.efi",
		"./efi/./a":       "efi/a",
		"efi/":            "efi",
		"a/b/../c":        "",
		"":                "",
		"/undionly.kpxe":  "",
		"C:\\boot\\a.efi": "",
	} {
		got, err := cleanName(in)
		if (want == "") != (err != nil) || got != want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
