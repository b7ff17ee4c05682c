package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
