// Package hook holds leakguard-hook's end-to-end tests: the built binary
// driven by real runtimes (runc, Podman) and checked against the real
// gssproxy. They run as root, in `make test`.
package hook

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// hookBin is the leakguard-hook binary under test.
var hookBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if dir := os.Getenv("LEAKGUARD_BIN_DIR"); dir != "" {
		if p := filepath.Join(dir, "leakguard-hook"); isFile(p) {
			hookBin = p
			return m.Run()
		}
	}
	tmp, err := os.MkdirTemp("", "leakguard-hook-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	hookBin = filepath.Join(tmp, "leakguard-hook")
	out, err := exec.Command("go", "build", "-o", hookBin, "../../plugins/leakguard-hook").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to build leakguard-hook: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// need fails the test when a tool CI installs is missing: these tests must
// run, not skip.
func need(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("leakguard-hook end-to-end tests run as root (make test)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install it (.ci/run installs runc busybox-static gssproxy podman util-linux)", tool)
		}
	}
}
