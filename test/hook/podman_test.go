package hook

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// hooksDir is a copy of conf/hooks.d with the hook path pointing at the
// binary under test and a policy that logs to logFile.
func hooksDir(t *testing.T, logFile string) string {
	t.Helper()
	raw, err := os.ReadFile("../../conf/hooks.d/leakguard-hook.json")
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("conf/hooks.d/leakguard-hook.json: %v", err)
	}
	hook := h["hook"].(map[string]any)
	hook["path"] = hookBin
	hook["args"] = append(hook["args"].([]any), "--config", writePolicy(t, `{"logFile":"`+logFile+`"}`))
	out, _ := json.Marshal(h)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "leakguard-hook.json"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPodman: Podman delivers the hook through conf/hooks.d; its storage,
// run and tmp dirs are private to the test.
func TestPodman(t *testing.T) {
	need(t, "podman", "runc")
	for _, privileged := range []bool{true, false} {
		name := map[bool]string{true: "privileged", false: "unprivileged"}[privileged]
		t.Run(name, func(t *testing.T) {
			b := newBundle(t)
			busyboxRootfs(t, b)
			logFile := filepath.Join(t.TempDir(), "hook.log")
			state := t.TempDir()
			global := []string{
				"--root", filepath.Join(state, "storage"), "--runroot", filepath.Join(state, "run"),
				"--tmpdir", filepath.Join(state, "tmp"), "--events-backend", "none",
				"--runtime", "runc", "--cgroup-manager", "cgroupfs", "--hooks-dir", hooksDir(t, logFile),
			}
			id := containerName("podman")
			t.Cleanup(func() {
				exec.Command("podman", append(global, "rm", "--force", "--ignore", id)...).Run()
			})
			args := slices.Concat(global, []string{"run", "--rm", "--name", id, "--network", "none",
				"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"})
			if privileged {
				args = append(args, "--privileged")
			}
			args = append(args, "--rootfs", b.rootfs, "/bin/cat", "/etc/gssproxy/gssproxy.conf")
			cmd := exec.Command("podman", args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("podman %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
			}
			seen := stdout.String()
			logged, _ := os.ReadFile(logFile)
			t.Logf("container saw:\n%shook logged: %s", seen, logged)
			m := logLine(t, string(logged))
			if m["privileged"] != privileged || m["id"] == "" {
				t.Fatalf("hook log %s", logged)
			}
			if on := strings.Contains(seen, "kernel_nfsd = yes"); on == privileged {
				t.Fatalf("privileged=%v container saw kernel_nfsd on=%v:\n%s", privileged, on, seen)
			}
		})
	}
}
