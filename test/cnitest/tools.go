// Package cnitest holds test-only helpers for driving CNI chains end to end
// with the real cnitool: locating (or building) the binaries, copying the
// example conflists with temporary state, running cnitool inside a node netns
// that plays the host, and leaking a pod netns while keeping a way to look
// inside it.
package cnitest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Tools are the directories holding every binary a chain needs.
type Tools struct {
	// CNIBin holds cnitool and the reference plugins (bridge, ptp, host-local, ...).
	CNIBin string
	// Leakguard holds the leakguard plugin binary.
	Leakguard string
	// TestBin holds test-only plugins such as tke-eni.
	TestBin string
}

// Cnitool is the path of the cnitool binary.
func (t Tools) Cnitool() string { return filepath.Join(t.CNIBin, "cnitool") }

// Leaksim is the path of the leak simulator (test/cmd/leaksim).
func (t Tools) Leaksim() string { return filepath.Join(t.TestBin, "leaksim") }

// CNIPath is the CNI_PATH value: leakguard first, then test and reference plugins.
func (t Tools) CNIPath() string {
	return strings.Join([]string{t.Leakguard, t.TestBin, t.CNIBin}, string(os.PathListSeparator))
}

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// FindTools uses $LEAKGUARD_CNI_BIN and $LEAKGUARD_BIN_DIR when set (as
// `make test` does) and otherwise provisions the binaries: cnitool and the
// reference plugins through scripts/install-cni-tools.sh into
// <repo>/.cache/cni/bin, leakguard and the test plugins with `go build` into
// scratch. It fails, naming what is missing, rather than letting tests skip.
func FindTools(scratch string) (Tools, error) {
	root, err := RepoRoot()
	if err != nil {
		return Tools{}, err
	}
	var tools Tools

	tools.CNIBin = os.Getenv("LEAKGUARD_CNI_BIN")
	if tools.CNIBin == "" {
		tools.CNIBin = filepath.Join(root, ".cache", "cni", "bin")
		cmd := exec.Command(filepath.Join(root, "scripts", "install-cni-tools.sh"), tools.CNIBin)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return Tools{}, fmt.Errorf("LEAKGUARD_CNI_BIN unset and scripts/install-cni-tools.sh failed (run `make test-deps`): %w\n%s", err, out)
		}
	}

	if dir := os.Getenv("LEAKGUARD_BIN_DIR"); dir != "" {
		tools.Leakguard = dir
		tools.TestBin = filepath.Join(dir, "test")
	} else {
		tools.Leakguard = filepath.Join(scratch, "bin")
		tools.TestBin = filepath.Join(scratch, "bin", "test")
		builds := [][2]string{
			{filepath.Join(tools.Leakguard, "leakguard"), "./plugins/leakguard"},
			{filepath.Join(tools.TestBin, "tke-eni"), "./test/cmd/tke-eni"},
			{tools.Leaksim(), "./test/cmd/leaksim"},
		}
		for _, b := range builds {
			cmd := exec.Command("go", "build", "-o", b[0], b[1])
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				return Tools{}, fmt.Errorf("LEAKGUARD_BIN_DIR unset and `go build %s` failed (run `make build test-bins`): %w\n%s", b[1], err, out)
			}
		}
	}

	need := []string{
		tools.Cnitool(),
		filepath.Join(tools.CNIBin, "bridge"),
		filepath.Join(tools.CNIBin, "ptp"),
		filepath.Join(tools.CNIBin, "host-local"),
		filepath.Join(tools.CNIBin, "host-device"),
		filepath.Join(tools.Leakguard, "leakguard"),
		filepath.Join(tools.TestBin, "tke-eni"),
		tools.Leaksim(),
	}
	for _, p := range need {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return Tools{}, fmt.Errorf("required binary %s is missing or not executable (run `make build test-bins test-deps`)", p)
		}
	}
	return tools, nil
}
