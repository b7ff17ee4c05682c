package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunPolicyFallback: a policy file that cannot be used is reported and
// the default (fail-open) policy applies, so the exit code is 0 even when the
// broken file asks for failClosed. A successfully read failClosed policy
// still fails the hook on an internal error; usage errors exit 2.
func TestRunPolicyFallback(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"invalid, asks failClosed", []string{"--config", write("bad.json", `{"failClosed":true,"mode":"x"}`)}, 0, "using the default policy"},
		{"missing", []string{"--config", filepath.Join(dir, "none.json")}, 0, "failed to read hook policy"},
		{"unreadable", []string{"--config", dir}, 0, "failed to read hook policy"},
		{"valid failClosed", []string{"--config", write("closed.json", `{"failClosed":true}`)}, 1, "not protected"},
		{"valid fail-open", []string{"--config", write("open.json", `{}`)}, 0, `"decision":"error"`},
		{"unknown flag", []string{"--nope"}, 2, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(tt.args, strings.NewReader("garbage"), &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d stderr %q; want %d and %q", code, stderr.String(), tt.code, tt.want)
			}
		})
	}
}

// TestRunLogFileRefused: a policy logFile that is a FIFO, a symlink to a file
// elsewhere or a directory never blocks or fails the hook, even with
// failClosed: the refusal and the container's line go to stderr, exit 0,
// and nothing is written through the symlink.
func TestRunLogFileRefused(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := map[string]func(p string) error{
		"fifo":    func(p string) error { return syscall.Mkfifo(p, 0o600) },
		"symlink": func(p string) error { return os.Symlink(outside, p) },
		"dir":     func(p string) error { return os.Mkdir(p, 0o700) },
	}
	for name, mk := range logs {
		t.Run(name, func(t *testing.T) {
			logFile := filepath.Join(dir, name+".log")
			if err := mk(logFile); err != nil {
				t.Fatal(err)
			}
			policy := filepath.Join(dir, name+".json")
			if err := os.WriteFile(policy, []byte(`{"mode":"off","failClosed":true,"logFile":"`+logFile+`"}`), 0o644); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			code := make(chan int, 1)
			go func() { code <- run([]string{"--config", policy}, strings.NewReader("{}"), &stderr) }()
			select {
			case c := <-code:
				if s := stderr.String(); c != 0 || !strings.Contains(s, "cannot open log file "+logFile) ||
					!strings.Contains(s, `"decision":"skipped"`) {
					t.Fatalf("exit %d stderr %q", c, s)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("hook blocked opening its log file")
			}
			if b, _ := os.ReadFile(outside); string(b) != "keep\n" {
				t.Fatalf("written through the symlink: %q", b)
			}
		})
	}
}
