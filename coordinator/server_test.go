package coordinator

import (
	"context"
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
