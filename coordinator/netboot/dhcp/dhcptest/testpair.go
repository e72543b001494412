package dhcptest

import (
	"testing"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// TestPair is NewPair for a test: it requires root and ip (testenv.Missing otherwise),
// fails the test if the pair cannot be made, and removes the pair when the test ends.
func TestPair(t testing.TB, prefix string, subnet byte) *Pair {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	p, err := NewPair(prefix, subnet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}
