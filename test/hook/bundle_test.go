package hook

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// bundle is an OCI bundle in a temp dir: config.json and rootfs/.
type bundle struct {
	dir, rootfs string
}

func newBundle(t *testing.T) *bundle {
	t.Helper()
	dir := t.TempDir()
	b := &bundle{dir: dir, rootfs: filepath.Join(dir, "rootfs")}
	if err := os.MkdirAll(filepath.Join(b.rootfs, "etc/gssproxy"), 0o755); err != nil {
		t.Fatal(err)
	}
	return b
}

// write puts a file into the rootfs.
func (b *bundle) write(t *testing.T, name string, content []byte) {
	t.Helper()
	p := filepath.Join(b.rootfs, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) read(t *testing.T, name string) string {
	t.Helper()
	c, err := os.ReadFile(filepath.Join(b.rootfs, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(c)
}

// writeSpec stores spec as the bundle's config.json.
func (b *bundle) writeSpec(t *testing.T, spec *specs.Spec) {
	t.Helper()
	c, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "config.json"), c, 0o644); err != nil {
		t.Fatal(err)
	}
}

// privilegedSpec is the minimum a runtime's --privileged leaves for the hook:
// CAP_SYS_ADMIN, no masked or read-only paths, a network namespace of its own.
func privilegedSpec() *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_SYS_ADMIN"}}},
		Linux:   &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}},
	}
}

// hookRun is one run of the built hook binary.
type hookRun struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
	maxRSS         int64 // bytes
}

// runHook feeds state to the binary as a runtime would.
func runHook(t *testing.T, state string, args ...string) hookRun {
	t.Helper()
	cmd := exec.Command(hookBin, args...)
	cmd.Stdin = strings.NewReader(state)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := hookRun{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss << 10 // KiB on Linux
	}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("failed to run %s: %v", hookBin, err)
	}
	return r
}

func stateFor(id, bundleDir string) string {
	b, _ := json.Marshal(specs.State{Version: specs.Version, ID: id, Status: specs.StateCreating, Pid: os.Getpid(), Bundle: bundleDir})
	return string(b)
}

// logLine parses the single JSON line the hook logged.
func logLine(t *testing.T, out string) map[string]any {
	t.Helper()
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("want exactly one log line, got %q", out)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("log line %q is not JSON: %v", out, err)
	}
	return m
}

func writePolicy(t *testing.T, p string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "hook.json")
	if err := os.WriteFile(f, []byte(p), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}
