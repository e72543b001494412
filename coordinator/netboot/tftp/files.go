package tftp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rivetmetal/rivet/coordinator/netboot/throttle"
)

// content is an open file ready to be sent: a cached copy in memory or the file itself.
type content struct {
	io.ReaderAt
	size  int64
	close func() error
}

// fileStore opens files inside the boot directory and keeps small ones in memory.
//
// The jail is an os.Root: every lookup is resolved by the kernel relative to the root
// directory's descriptor, so "..", absolute symlinks and symlinks that lead outside are
// refused even if the tree changes while we look. cleanName refuses the obvious attacks
// first so that the error the client sees is a clear "access violation".
type fileStore struct {
	root         *os.Root
	maxFileSize  int64 // files up to this size are cached
	maxCacheSize int64 // total bytes of cached data

	mu     sync.Mutex
	cached map[string]*cachedFile // by clean name
	total  int64
}

// cachedFile is a file's bytes, valid while the file keeps the same mtime and size.
type cachedFile struct {
	modTime time.Time
	size    int64
	data    []byte
}

func newFileStore(dir string, maxFileSize, maxCacheSize int64) (*fileStore, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open TFTP root %q: %w (create it or set Config.Root to the boot file directory)", dir, err)
	}
	return &fileStore{root: root, maxFileSize: maxFileSize, maxCacheSize: maxCacheSize, cached: map[string]*cachedFile{}}, nil
}

// cleanName turns a requested file name into a path relative to the root, or refuses it.
// Backslashes, absolute paths, ".." components and control characters never name a boot
// file Rivet hands out, so they are refused rather than interpreted.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", ErrFileNotFound
	}
	if strings.HasPrefix(name, "/") || strings.ContainsRune(name, '\\') {
		return "", ErrAccessViolation
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f {
			return "", ErrAccessViolation
		}
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", ErrAccessViolation
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", ErrFileNotFound
	}
	return clean, nil
}

// open returns the content of name. Errors are ErrFileNotFound or ErrAccessViolation,
// wrapping the underlying cause for the log.
func (st *fileStore) open(name string) (content, error) {
	clean, err := cleanName(name)
	if err != nil {
		return content{}, err
	}
	// O_NONBLOCK: a FIFO planted in the boot directory must not hang the transfer.
	f, err := st.root.OpenFile(clean, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		st.forget(clean)
		return content{}, openError(clean, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return content{}, fmt.Errorf("%w: %v", ErrAccessViolation, err)
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return content{}, fmt.Errorf("%w: %s is not a regular file", ErrFileNotFound, throttle.Quote(clean))
	}
	if info.Size() > st.maxFileSize {
		return content{ReaderAt: f, size: info.Size(), close: f.Close}, nil
	}
	data, err := st.cachedData(clean, f, info)
	f.Close()
	if err != nil {
		return content{}, err
	}
	return content{ReaderAt: bytes.NewReader(data), size: int64(len(data)), close: func() error { return nil }}, nil
}

// cachedData returns the file's bytes from the cache, reading them on a miss. The lock is
// held while a small file is read so that hundreds of machines asking for the iPXE binary
// at the same moment cause one read, not hundreds.
func (st *fileStore) cachedData(clean string, f *os.File, info os.FileInfo) ([]byte, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if c, ok := st.cached[clean]; ok && c.size == info.Size() && c.modTime.Equal(info.ModTime()) {
		return c.data, nil
	}
	data := make([]byte, info.Size())
	if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: read %s: %v", ErrAccessViolation, throttle.Quote(clean), err)
	}
	if old, ok := st.cached[clean]; ok {
		st.total -= old.size
		delete(st.cached, clean)
	}
	if st.total+info.Size() <= st.maxCacheSize {
		st.cached[clean] = &cachedFile{modTime: info.ModTime(), size: info.Size(), data: data}
		st.total += info.Size()
	}
	return data, nil
}

// forget drops a cache entry whose file went away, so deleted files do not pin memory.
func (st *fileStore) forget(clean string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if old, ok := st.cached[clean]; ok {
		st.total -= old.size
		delete(st.cached, clean)
	}
}

// openError classifies a failed open. The name is the client's, so the message carries
// it quoted, and the cause without the path.
func openError(name string, err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		err = pe.Err
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s: %v", ErrFileNotFound, throttle.Quote(name), err)
	}
	// Permission denied, a symlink escaping the root, a path through a regular file:
	// to the client all of these are "access violation".
	return fmt.Errorf("%w: %s: %v", ErrAccessViolation, throttle.Quote(name), err)
}

func (st *fileStore) close() error { return st.root.Close() }
