package hook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const nfsOn = "[service/nfs-server]\n  mechs = krb5\n  kernel_nfsd = yes\n  euid = 0\n"

// TestExitCodes runs the built binary on inputs a runtime could send and
// checks the failure policy: fail-open exits 0 and logs, failClosed exits 1
// with a message naming the problem.
func TestExitCodes(t *testing.T) {
	need(t)
	openP := writePolicy(t, `{"mode":"privileged"}`)
	closedP := writePolicy(t, `{"failClosed":true}`)
	missing := stateFor("gone", filepath.Join(t.TempDir(), "no-such-bundle"))
	tests := []struct {
		name, state, policy string
		code                int
		stderr              string
	}{
		{"garbage stdin, fail-open", "garbage", openP, 0, `"decision":"error"`},
		{"garbage stdin, fail-closed", "garbage", closedP, 1, "leakguard-hook: container \"\" not protected: failed to parse OCI state"},
		{"empty stdin, fail-closed", "", closedP, 1, "failed to parse OCI state"},
		{"missing bundle, fail-open", missing, openP, 0, `"id":"gone"`},
		{"missing bundle, fail-closed", missing, closedP, 1, "failed to open bundle config"},
		{"missing bundle, mode off, fail-closed", missing, writePolicy(t, `{"mode":"off","failClosed":true}`), 0, `"reason":"mode off"`},
		{"invalid policy", "garbage", writePolicy(t, `{"mode":"sometimes"}`), 2, `invalid hook policy`},
		{"missing explicit policy", "garbage", filepath.Join(t.TempDir(), "none.json"), 2, `failed to read hook policy`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runHook(t, tt.state, "--config", tt.policy)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Fatalf("exit %d stderr %q; want exit %d and stderr containing %q", r.code, r.stderr, tt.code, tt.stderr)
			}
			if r.stdout != "" {
				t.Fatalf("hook wrote to stdout: %q", r.stdout)
			}
		})
	}
}

// TestBinaryEditsAndLogs: the whole binary on a privileged bundle, logging
// to the policy's log file, twice (the second run changes nothing).
func TestBinaryEditsAndLogs(t *testing.T) {
	need(t)
	b := newBundle(t)
	b.write(t, "etc/gssproxy/24-nfs-server.conf", []byte(nfsOn))
	b.writeSpec(t, privilegedSpec())
	logFile := filepath.Join(t.TempDir(), "hook.log")
	policy := writePolicy(t, `{"logFile":"`+logFile+`"}`)

	start := time.Now()
	r := runHook(t, stateFor("ctr-1", b.dir), "--config", policy)
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("hook took %v; must finish well under a second", elapsed)
	}
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d stderr %q", r.code, r.stderr)
	}
	if strings.Contains(b.read(t, "etc/gssproxy/24-nfs-server.conf"), "kernel_nfsd = yes") {
		t.Fatal("kernel_nfsd still yes")
	}
	log1, _ := os.ReadFile(logFile)
	m := logLine(t, string(log1))
	if m["id"] != "ctr-1" || m["decision"] != "edited" || m["privileged"] != true {
		t.Fatalf("log %s", log1)
	}

	runHook(t, stateFor("ctr-1", b.dir), "--config", policy)
	log2, _ := os.ReadFile(logFile)
	m = logLine(t, strings.TrimPrefix(string(log2), string(log1)))
	if m["decision"] != "clean" || len(m["files_changed"].([]any)) != 0 {
		t.Fatalf("second run log %s", log2)
	}
}
