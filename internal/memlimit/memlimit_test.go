package memlimit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParse(t *testing.T) {
	for value, want := range map[string]int64{
		"off": 0, "OFF": 0, "0": 0,
		"420MiB": 420 << 20, "2GiB": 2 << 30, "1.5GiB": 3 << 29, "500MB": 500e6,
		"123456789": 123456789, " 64 KiB ": 64 << 10, "100B": 100,
	} {
		if got, err := Parse(value); err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", value, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-5MiB", "MiB", "5XB", "1e300GiB", "NaN"} {
		if got, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", bad, got)
		}
	}
}

func TestLowestLimitReadsCgroupFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := lowestLimit(dir); got != 0 {
		t.Fatalf("no files: %d, want 0", got)
	}
	write("memory.max", "max\n")
	write("memory.high", "max\n")
	if got := lowestLimit(dir); got != 0 {
		t.Fatalf("unlimited cgroup: %d, want 0", got)
	}
	write("memory.max", "1073741824\n")
	if got := lowestLimit(dir); got != 1<<30 {
		t.Fatalf("memory.max 1 GiB: %d", got)
	}
	write("memory.high", "536870912\n")
	if got := lowestLimit(dir); got != 1<<29 {
		t.Fatalf("memory.high below memory.max: %d, want the lower", got)
	}
}
