// Package atomicfile replaces files so that a crash or power cut at any point leaves
// either the old content or the new, never a mix: the agent's machine token, its step
// journal and the files the handoff step writes into an installed OS all rely on it.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm: a temporary file in the same directory,
// fsynced, renamed over path, then the directory fsynced so the rename is durable.
func Write(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
