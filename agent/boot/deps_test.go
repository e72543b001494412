package boot

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// rivet-agent goes to every machine on every PXE boot: boot must not pull in anything big.
func TestBootStaysSmall(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "github.com/rivetmetal/rivet/agent/boot")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // how rivet-agent is built
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"html/template", "hashicorp/raft", "bbolt", "boltdb", "go-memdb",
			"/coordinator", "rivet/initramfs", "klauspost/compress", "runtime/cgo"} {
			if strings.Contains(dep, banned) {
				t.Errorf("agent/boot depends on %s (matches %q)", dep, banned)
			}
		}
	}
}
