package agent

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/rivetmetal/rivet/internal/testenv"
)

// goList returns the packages pkg depends on (itself included) with their imports, for
// linux/amd64 without cgo: how rivet-agent is built.
func goList(t *testing.T, pkg string) map[string][]string {
	t.Helper()
	goTool := testenv.RequireCommand(t, "go")
	cmd := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", pkg)
	cmd.Dir = testenv.RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	graph := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		graph[fields[0]] = fields[1:]
	}
	return graph
}

// importers returns the packages in graph that import pkg.
func importers(graph map[string][]string, pkg string) []string {
	var out []string
	for p, imports := range graph {
		if contains(imports, pkg) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func keys(graph map[string][]string) []string {
	var out []string
	for p := range graph {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// forbidden reports the deps that match any of the prefixes (a prefix matches the path
// itself and everything below it).
func forbidden(deps, prefixes []string) []string {
	var bad []string
	for _, d := range deps {
		for _, p := range prefixes {
			if d == p || strings.HasPrefix(d, p+"/") || strings.HasPrefix(d, p+"-") {
				bad = append(bad, d)
			}
		}
	}
	return bad
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The agent goes to every machine on every PXE boot: it must not drag in the
// coordinator's storage, consensus or status pages.
func TestAgentBinaryLinksNoCoordinatorParts(t *testing.T) {
	graph := goList(t, "./agent/cmd/rivet-agent")
	deps := keys(graph)
	if !contains(deps, "github.com/hashicorp/serf/serf") || !contains(deps, "github.com/rivetmetal/rivet/agent") {
		t.Fatalf("go list output does not look like rivet-agent's dependencies (%d packages)", len(deps))
	}
	bad := forbidden(deps, []string{
		"github.com/hashicorp/raft", // and raft-boltdb
		"go.etcd.io/bbolt",
		"github.com/boltdb/bolt",
		"github.com/hashicorp/go-memdb",
		"github.com/rivetmetal/rivet/coordinator",
	})
	if len(bad) > 0 {
		t.Errorf("rivet-agent links packages it must not:\n  %s", strings.Join(bad, "\n  "))
	}
	// html/template: one known way in that Rivet cannot close. Serf's msgpack codec
	// (github.com/hashicorp/go-msgpack/v2/codec) imports net/rpc for its RPC codec, and
	// net/rpc's debug page imports html/template (about 90 kB linked). Anything else that
	// brings html/template in fails the test.
	allowed := map[string][]string{
		"html/template": {"net/rpc"},
		"net/rpc":       {"github.com/hashicorp/go-msgpack/v2/codec"},
	}
	for pkg, want := range allowed {
		for _, imp := range importers(graph, pkg) {
			if !contains(want, imp) {
				t.Errorf("%s is imported by %s: only %v may bring it into rivet-agent", pkg, imp, want)
			}
		}
	}
}

// shared/ is the wire: the agent, the coordinator and the CLI all import it, so it may
// import none of them, nor the heavy libraries either side uses.
func TestSharedImportsOnlyTheWire(t *testing.T) {
	deps := keys(goList(t, "./shared"))
	if !contains(deps, "github.com/rivetmetal/rivet/shared") {
		t.Fatalf("go list ./shared listed %d packages without shared itself", len(deps))
	}
	bad := forbidden(deps, []string{
		"github.com/rivetmetal/rivet/agent",
		"github.com/rivetmetal/rivet/coordinator",
		"github.com/hashicorp/raft",
		"github.com/hashicorp/serf",
		"github.com/hashicorp/memberlist",
		"github.com/jaypipes/ghw",
	})
	if len(bad) > 0 {
		t.Errorf("shared/ imports packages it must not:\n  %s", strings.Join(bad, "\n  "))
	}
}

// The release build of rivet-agent is static (no cgo, no ELF interpreter) and small.
func TestAgentBinaryIsStatic(t *testing.T) {
	testenv.Long(t)
	goTool := testenv.RequireCommand(t, "go")
	bin := filepath.Join(t.TempDir(), "rivet-agent")
	cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./agent/cmd/rivet-agent")
	cmd.Dir = testenv.RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("rivet-agent has an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("rivet-agent needs shared libraries: %v", libs)
	}
	info, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	mb := float64(info.Size()) / (1 << 20)
	fmt.Printf("rivet-figure: rivet-agent binary (CGO_ENABLED=0, -trimpath -s -w): %.1f MB (goal <= 20 MB): %.2fx of goal\n", mb, mb/20)
	if mb > 20 {
		t.Errorf("rivet-agent is %.1f MB, over the 20 MB goal", mb)
	}
}
