package coordinator

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataDirInUse: a second coordinator on a data dir in use fails at once with a hint,
// instead of blocking forever on the Raft log's file lock (before, this test hung).
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	first, err := New(context.Background(), Config{DataDir: dir, NodeID: "c1", RaftAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Shutdown()
	second, err := New(context.Background(), Config{DataDir: dir, NodeID: "c1", RaftAddr: "127.0.0.1:0"})
	if err == nil {
		second.Shutdown()
		t.Fatal("a second coordinator opened the same data dir")
	}
	if !strings.Contains(err.Error(), "another coordinator") {
		t.Fatalf("err = %v; want the hint about another coordinator", err)
	}
}

// TestDataDirFromBeforeLinksIsRefused: a Raft log without an identity (a data dir from
// before mutual-TLS links) is refused with what to do, not bootstrapped over.
func TestDataDirFromBeforeLinksIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "raft.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), Config{DataDir: dir, NodeID: "c1", RaftAddr: "127.0.0.1:0"})
	if err == nil {
		s.Shutdown()
		t.Fatal("a data dir with a Raft log and no identity was opened")
	}
	if !strings.Contains(err.Error(), "--join") {
		t.Fatalf("err = %v; want the hint to join", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "seal.key")); !os.IsNotExist(err) {
		t.Fatal("a seal key was made for a data dir that was refused")
	}
}
