// Package disktest gives tests and benches real block devices to write to: sparse files
// attached as loop devices, and a made-up sysfs tree in which those loop devices carry
// serial numbers and WWNs (real loop devices have none), for disk.Resolver.SysRoot.
// It needs root and losetup; nothing in the agent imports it.
package disktest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Loop is a sparse file attached as a loop device.
type Loop struct {
	File string // backing file
	Dev  string // /dev/loopN
	Name string // loopN
}

// Attach creates a sparse file of size bytes in dir and attaches it as a loop device.
// The caller must Detach it (t.Cleanup in tests), also on failure paths.
func Attach(dir string, size int64) (*Loop, error) {
	f, err := os.CreateTemp(dir, "rvt-disk-*.img")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	out, err := exec.Command("losetup", "--find", "--show", "--partscan", f.Name()).CombinedOutput()
	if err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("losetup --find --show --partscan %s: %v: %s", f.Name(), err, strings.TrimSpace(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	return &Loop{File: f.Name(), Dev: dev, Name: filepath.Base(dev)}, nil
}

// Detach detaches the loop device and removes its backing file.
func (l *Loop) Detach() error {
	out, err := exec.Command("losetup", "--detach", l.Dev).CombinedOutput()
	rmErr := os.Remove(l.File)
	if err != nil {
		return fmt.Errorf("losetup --detach %s: %v: %s", l.Dev, err, strings.TrimSpace(string(out)))
	}
	return rmErr
}

// Identity is what the fake sysfs says about one loop device.
type Identity struct {
	Serial string
	WWN    string
}

// FakeSysfs writes, under root, a sysfs tree with one block device per entry of ids (loop
// device name → identity). dev, size and queue/logical_block_size are copied from the real
// /sys/block entry, so that disk.Resolver can check the /dev node against them.
func FakeSysfs(root string, ids map[string]Identity) error {
	for name, id := range ids {
		real := filepath.Join("/sys/block", name)
		dir := filepath.Join(root, "block", name)
		if err := os.MkdirAll(filepath.Join(dir, "queue"), 0o755); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, "holders"), 0o755); err != nil {
			return err
		}
		for _, f := range []string{"dev", "size", "queue/logical_block_size"} {
			raw, err := os.ReadFile(filepath.Join(real, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), raw, 0o644); err != nil {
				return err
			}
		}
		if id.Serial != "" {
			if err := os.WriteFile(filepath.Join(dir, "serial"), []byte(id.Serial+"\n"), 0o644); err != nil {
				return err
			}
		}
		if id.WWN != "" {
			if err := os.WriteFile(filepath.Join(dir, "wwid"), []byte(id.WWN+"\n"), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// Suffix returns a short random hex string for unique names.
func Suffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SHA256 returns the hex SHA-256 of the first n bytes of path (all of it when n < 0).
func SHA256(path string, n int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var r io.Reader = f
	if n >= 0 {
		r = io.LimitReader(f, n)
	}
	h := sha256.New()
	buf := make([]byte, 4<<20)
	if _, err := io.CopyBuffer(h, r, buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
