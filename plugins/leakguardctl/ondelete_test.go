package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/install/ondelete"
	"github.com/leakguard/leakguard/test/apifake"
)

// startIn starts leakguardctl with the pod's environment of api (and none
// of this process's Kubernetes variables).
func startIn(t *testing.T, api *apifake.Server, args ...string) (*exec.Cmd, *syncBuf) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBERNETES_") && !strings.HasPrefix(kv, "POD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for _, k := range []string{ondelete.EnvHost, ondelete.EnvPort, ondelete.EnvNamespace, ondelete.EnvPod} {
		cmd.Env = append(cmd.Env, k+"="+api.Env()(k))
	}
	var stderr syncBuf
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &stderr
}

// serve --install --uninstall-on-delete, SIGTERM: uninstalled only when the
// API server says the DaemonSet is gone or being deleted; without the flag,
// kept even then.
func TestServeUninstallOnDelete(t *testing.T) {
	for _, c := range []struct {
		name      string
		flag      bool
		answer    apifake.Answer
		uninstall bool
		log       string
	}{
		{"daemonset gone", true, apifake.NotFound, true, `"msg":"uninstalled"`},
		{"daemonset present", true, apifake.ServeObject, false, "exists: a restart or an upgrade"},
		{"forbidden", true, apifake.Forbidden, false, "access denied"},
		{"API server hangs", true, apifake.Hang, false, "did not answer in time"},
		{"daemonset gone, flag off", false, apifake.NotFound, false, "leakguard stays installed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := apifake.New(t)
			api.Set(func(f *apifake.Server) { f.DSAnswer = c.answer })
			n := newConfNode(t)
			hookDir := filepath.Join(t.TempDir(), "hook")
			if err := os.WriteFile(filepath.Join(n.from, "leakguard-hook"), []byte(fakePlugin), 0o755); err != nil {
				t.Fatal(err)
			}
			addr := freePort(t)
			args := n.dirs("serve", "--install", "--listen", addr, "--interval", "1s", "--hook-dir", hookDir,
				"--state-dir", filepath.Join(t.TempDir(), "state"), "--nri-state", filepath.Join(t.TempDir(), "absent.json"),
				"--serviceaccount-dir", api.SADir, "--uninstall-timeout", "3s")
			if c.flag {
				args = append(args, "--uninstall-on-delete")
			}
			cmd, stderr := startIn(t, api, args...)
			waitUntil(t, "/readyz", func() bool { code, _ := httpGet("http://" + addr + "/readyz"); return code == http.StatusOK })
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr)
			}
			if took := time.Since(begin); took > 6*time.Second {
				t.Fatalf("serve took %v to stop with --uninstall-timeout 3s", took)
			}
			hook := filepath.Join(hookDir, "leakguard-hook")
			lg := filepath.Join(n.bin, "leakguard")
			if c.uninstall {
				if holdsEntry(n.conf) || exists(lg) || exists(hook) {
					t.Fatalf("entry %v, leakguard %v, hook %v after uninstall\n%s", holdsEntry(n.conf), exists(lg), exists(hook), stderr)
				}
				if n, _ := lgEntries(t, n.conf); n != 0 {
					t.Fatalf("%d entries left", n)
				}
			} else if !holdsEntry(n.conf) || !exists(lg) || !exists(hook) {
				t.Fatalf("entry %v, leakguard %v, hook %v: want all kept\n%s", holdsEntry(n.conf), exists(lg), exists(hook), stderr)
			}
			if !strings.Contains(stderr.String(), c.log) {
				t.Fatalf("stderr lacks %q:\n%s", c.log, stderr)
			}
			if c.flag == (api.Hits.Load() == 0) || api.BadAuth.Load() != 0 {
				t.Fatalf("API requests: %d (%d without the token); flag %v", api.Hits.Load(), api.BadAuth.Load(), c.flag)
			}
		})
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }
