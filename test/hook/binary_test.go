package hook

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const nfsOn = "[service/nfs-server]\n  mechs = krb5\n  kernel_nfsd = yes\n  euid = 0\n"

// TestExitCodes runs the built binary on inputs a runtime could send and
// checks the failure policy: fail-open exits 0 and logs, failClosed exits 1
// with a message naming the problem. A policy file that cannot be used never
// blocks a container: it is reported and the default policy (fail-open)
// applies. Only a malformed hook command line exits 2.
func TestExitCodes(t *testing.T) {
	need(t)
	openP := writePolicy(t, `{"mode":"privileged"}`)
	closedP := writePolicy(t, `{"failClosed":true}`)
	missing := stateFor("gone", filepath.Join(t.TempDir(), "no-such-bundle"))
	fallback := "using the default policy (mode privileged, fail-open)"
	tests := []struct {
		name, state string
		args        []string
		code        int
		stderr      []string
	}{
		{"garbage stdin, fail-open", "garbage", []string{"--config", openP}, 0, []string{`"decision":"error"`}},
		{"garbage stdin, fail-closed", "garbage", []string{"--config", closedP}, 1, []string{"leakguard-hook: container \"\" not protected: failed to parse OCI state"}},
		{"empty stdin, fail-closed", "", []string{"--config", closedP}, 1, []string{"failed to parse OCI state"}},
		{"missing bundle, fail-open", missing, []string{"--config", openP}, 0, []string{`"id":"gone"`}},
		{"missing bundle, fail-closed", missing, []string{"--config", closedP}, 1, []string{"failed to open bundle config"}},
		{"missing bundle, mode off, fail-closed", missing, []string{"--config", writePolicy(t, `{"mode":"off","failClosed":true}`)}, 0, []string{`"reason":"mode off"`}},
		{"invalid policy", "garbage", []string{"--config", writePolicy(t, `{"mode":"sometimes"}`)}, 0,
			[]string{`invalid hook policy`, `mode \"sometimes\"`, fallback, `"decision":"error"`, `"policy_error":"invalid hook policy`}},
		{"invalid policy asking failClosed", missing, []string{"--config", writePolicy(t, `{"failClosed":true,"mdoe":"all"}`)}, 0,
			[]string{`unknown field \"mdoe\"`, fallback, `"id":"gone"`, `"decision":"error"`}},
		{"missing explicit policy", "garbage", []string{"--config", filepath.Join(t.TempDir(), "none.json")}, 0,
			[]string{`failed to read hook policy`, fallback, `"decision":"error"`}},
		{"unreadable policy (a directory)", missing, []string{"--config", t.TempDir()}, 0,
			[]string{`failed to read hook policy`, fallback, `"id":"gone"`}},
		{"unknown flag", "garbage", []string{"--confg", openP}, 2, []string{"flag provided but not defined: -confg"}},
		{"flag without value", "garbage", []string{"--config"}, 2, []string{"flag needs an argument: -config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runHook(t, tt.state, tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d stderr %q; want exit %d", r.code, r.stderr, tt.code)
			}
			for _, want := range tt.stderr {
				if !strings.Contains(r.stderr, want) {
					t.Fatalf("stderr %q; want it to contain %q", r.stderr, want)
				}
			}
			if r.stdout != "" {
				t.Fatalf("hook wrote to stdout: %q", r.stdout)
			}
		})
	}
}

// TestInvalidPolicyStillProtects: with a policy file the hook cannot use, the
// container is handled under the default policy (privileged: edited), the
// hook exits 0 even though the file asks for failClosed, and the problem is
// on stderr and in the log file the broken policy names.
func TestInvalidPolicyStillProtects(t *testing.T) {
	need(t)
	b := newBundle(t)
	b.write(t, "etc/gssproxy/24-nfs-server.conf", []byte(nfsOn))
	b.writeSpec(t, privilegedSpec())
	logFile := filepath.Join(t.TempDir(), "hook.log")
	policy := writePolicy(t, `{"mode":"evrything","failClosed":true,"logFile":"`+logFile+`"}`)

	r := runHook(t, stateFor("ctr-bad-policy", b.dir), "--config", policy)
	if r.code != 0 || !strings.Contains(r.stderr, `mode "evrything"`) || !strings.Contains(r.stderr, policy) {
		t.Fatalf("exit %d stderr %q", r.code, r.stderr)
	}
	if strings.Contains(b.read(t, "etc/gssproxy/24-nfs-server.conf"), "kernel_nfsd = yes") {
		t.Fatal("default policy not applied: kernel_nfsd still yes")
	}
	logged, _ := os.ReadFile(logFile)
	m := logLine(t, string(logged))
	if m["id"] != "ctr-bad-policy" || m["decision"] != "edited" || m["level"] != "WARN" ||
		!strings.Contains(fmt.Sprint(m["policy_error"]), `mode "evrything"`) {
		t.Fatalf("log %s", logged)
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
