package boot

import (
	"fmt"
	"strings"
	"testing"
)

func TestLowMemoryWarning(t *testing.T) {
	meminfo := func(kib int) string { return fmt.Sprintf("MemTotal:       %d kB\nMemFree:        1000 kB\n", kib) }
	if w := lowMemoryWarning(strings.NewReader(meminfo(90 * 1024))); !strings.Contains(w, "WARNING: low memory") ||
		!strings.Contains(w, "90 MiB") || !strings.Contains(w, fmt.Sprintf("at least %d MiB", MinimumRAMMiB)) {
		t.Errorf("90 MiB MemTotal: warning %q; want one naming the MemTotal and the minimum", w)
	}
	if w := lowMemoryWarning(strings.NewReader(meminfo(470 * 1024))); w != "" {
		t.Errorf("470 MiB MemTotal (a 512 MiB VM) warned: %q", w)
	}
	for _, bad := range []string{"", "MemTotal:\n", "MemTotal: lots kB\n", "MemTotal: 1 MB\n"} {
		if w := lowMemoryWarning(strings.NewReader(bad)); w != "" {
			t.Errorf("meminfo %q: warning %q; want none when MemTotal cannot be read", bad, w)
		}
	}
}
