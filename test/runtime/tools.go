package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/leakguard/leakguard/test/cnitest"
)

// Tools are the binaries the harness runs.
type Tools struct {
	// Built from the Go module proxy by scripts/install-runtime-tools.sh
	// into <repo>/.cache/runtime (or $LEAKGUARD_RUNTIME_CACHE).
	Containerd string
	Shim       string // containerd-shim-runc-v2
	Ctr        string
	Crictl     string
	CRIDockerd string

	// From Debian's packages (.ci/run installs them).
	Runc    string
	Dockerd string
	Docker  string // docker.io's own CLI, whatever else is first in $PATH
	Unshare string

	// CNI holds the reference plugins (bridge, host-local, loopback, ...),
	// leakguard and the test-only binaries.
	CNI cnitest.Tools
}

// TestBinary is the path of a test/cmd binary (pause, cnispy, oomclamp, leaksim).
func (t Tools) TestBinary(name string) string { return filepath.Join(t.CNI.TestBin, name) }

// ReferencePlugin is the path of a reference CNI plugin.
func (t Tools) ReferencePlugin(name string) string { return filepath.Join(t.CNI.CNIBin, name) }

// Leakguard is the path of the leakguard CNI plugin.
func (t Tools) Leakguard() string { return filepath.Join(t.CNI.Leakguard, "leakguard") }

// Debian's paths: /usr/local/bin may hold another docker CLI.
const (
	debianRunc    = "/usr/sbin/runc"
	debianDockerd = "/usr/sbin/dockerd"
	debianDocker  = "/usr/bin/docker"
	debianUnshare = "/usr/bin/unshare"
)

// testBinaries are the test/cmd programs the harness needs besides those
// cnitest builds.
var testBinaries = []string{"pause", "cnispy", "oomclamp", "leaksim"}

// FindTools locates every binary, building what is missing: the runtimes
// through scripts/install-runtime-tools.sh (a no-op once cached), the CNI
// plugins and leakguard through cnitest.FindTools, the test binaries with
// `go build` into scratch when $LEAKGUARD_BIN_DIR is unset (make test sets
// it). A missing tool is an error, never a reason to skip.
func FindTools(scratch string) (Tools, error) {
	root, err := cnitest.RepoRoot()
	if err != nil {
		return Tools{}, err
	}
	var t Tools
	if t.CNI, err = cnitest.FindTools(scratch); err != nil {
		return Tools{}, err
	}
	if os.Getenv("LEAKGUARD_BIN_DIR") == "" {
		for _, name := range testBinaries {
			cmd := exec.Command("go", "build", "-o", filepath.Join(t.CNI.TestBin, name), "./test/cmd/"+name)
			cmd.Dir = root
			// Static: pause is the only file of the pause image.
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				return Tools{}, fmt.Errorf("LEAKGUARD_BIN_DIR unset and `go build ./test/cmd/%s` failed (run `make test-bins`): %w\n%s", name, err, out)
			}
		}
	}

	cache := os.Getenv("LEAKGUARD_RUNTIME_CACHE")
	if cache == "" {
		cache = filepath.Join(root, ".cache", "runtime")
	}
	built, err := runtimeTools(root, cache)
	if err != nil {
		return Tools{}, err
	}
	t.Containerd, t.Shim, t.Ctr = built["containerd"], built["containerd-shim-runc-v2"], built["ctr"]
	t.Crictl, t.CRIDockerd = built["crictl"], built["cri-dockerd"]
	t.Runc, t.Dockerd, t.Docker, t.Unshare = debianRunc, debianDockerd, debianDocker, debianUnshare

	need := []string{t.Containerd, t.Shim, t.Ctr, t.Crictl, t.CRIDockerd, t.Leakguard()}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		need = append(need, t.ReferencePlugin(p))
	}
	for _, name := range testBinaries {
		need = append(need, t.TestBinary(name))
	}
	for _, p := range need {
		if !isExecutable(p) {
			return Tools{}, fmt.Errorf("required binary %s is missing or not executable (run `make build test-bins test-deps runtime-deps`)", p)
		}
	}
	for _, p := range []string{t.Runc, t.Dockerd, t.Docker, t.Unshare} {
		if !isExecutable(p) {
			return Tools{}, fmt.Errorf("%s is missing: install Debian's runc, docker.io and util-linux (.ci/run does)", p)
		}
	}
	return t, nil
}

// runtimeTools runs the build script (it only checks its stamps once the
// cache is warm) and returns the "name=path" lines it prints.
func runtimeTools(root, cache string) (map[string]string, error) {
	cmd := exec.Command(filepath.Join(root, "scripts", "install-runtime-tools.sh"), cache)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("scripts/install-runtime-tools.sh %s failed (run `make runtime-deps`): %w\n%s", cache, err, stderr.Bytes())
	}
	paths := map[string]string{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if name, path, ok := strings.Cut(sc.Text(), "="); ok {
			paths[name] = path
		}
	}
	return paths, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
