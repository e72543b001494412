// Package testenv decides what a test does when a real part it needs (root, a network
// namespace, qemu, dockerd, chromium) is missing: under CI (CI=true) the test fails with a
// message that says what to install; on a developer's machine it is skipped with the same
// message. A suite never skips silently in CI.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// InCI reports whether the tests run under CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing stops the test because a dependency is missing: Fatal in CI, Skip elsewhere.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("missing test dependency (CI must provide it; see .ci/install-debs): "+format, args...)
	}
	t.Skipf("skipping, missing dependency: "+format, args...)
}

// RequireRoot needs uid 0 (network namespaces, loop devices, taps).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root (run the privileged suites as root, as CI does)")
	}
}

// RequireCommand needs an executable on PATH and returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "command %s not found on PATH (bash .ci/install-debs installs it)", name)
	}
	return path
}

// RequireFile needs a file such as /usr/lib/ipxe/undionly.kpxe.
func RequireFile(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, "file %s: %v (bash .ci/install-debs installs it)", path, err)
	}
}

// Long marks a test that takes minutes; `go test -short` skips it (never in CI).
func Long(t testing.TB) {
	t.Helper()
	if testing.Short() && !InCI() {
		t.Skip("long test: skipped with -short")
	}
}

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}
