package shared

import "testing"

func TestHumanBytesAndRate(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		3 << 30: "3.0 GiB", 1 << 60: "1.0 EiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	if got := HumanRate(0); got != "" {
		t.Errorf("HumanRate(0) = %q, want nothing", got)
	}
	if got := HumanRate(2 << 20); got != "2.0 MiB/s" {
		t.Errorf("HumanRate(2 MiB) = %q", got)
	}
}
