package coordinator

import (
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// hashicorp/raft's FileSnapshotStore writes snapshots with its own modes (0755 dirs,
// 0644 files). A snapshot is the whole state: privateSnapshots tightens every one it
// persists to 0700/0600, and openSnapshots tightens what is already there.

// openSnapshots opens DIR/snapshots, keeping three.
func openSnapshots(dir string, logger hclog.Logger) (raft.SnapshotStore, error) {
	store, err := raft.NewFileSnapshotStoreWithLogger(dir, 3, logger)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(dir, "snapshots")
	if err := tightenTree(root); err != nil {
		return nil, err
	}
	return &privateSnapshots{FileSnapshotStore: store, root: root}, nil
}

type privateSnapshots struct {
	*raft.FileSnapshotStore
	root string
}

func (p *privateSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := p.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &privateSink{SnapshotSink: sink, root: p.root}, nil
}

type privateSink struct {
	raft.SnapshotSink
	root string
}

// Close persists the snapshot, then tightens its files.
func (s *privateSink) Close() error {
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	return tightenTree(s.root)
}

// tightenTree makes root and every directory under it 0700 and every file 0600. Files
// that vanish meanwhile (old snapshots reaped) are skipped.
func tightenTree(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		mode := os.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		if err := os.Chmod(path, mode); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	})
}

// hasRaftLog reports whether the data dir holds a Raft log.
func hasRaftLog(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "raft.db"))
	return err == nil
}
