package nritest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Log collects a plugin's JSON log lines (an io.Writer safe for concurrent use).
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Log) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Log) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the records whose msg contains substr.
func (b *Log) Lines(t testing.TB, substr string) []map[string]any {
	t.Helper()
	return Records(t, b.String(), substr)
}

// Records parses JSON log lines and returns those whose msg contains substr.
func Records(t testing.TB, data, substr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(data), "\n") {
		if l == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if msg, _ := rec["msg"].(string); strings.Contains(msg, substr) {
			out = append(out, rec)
		}
	}
	return out
}

// FakeHook writes an executable file for the plugin to hand to the runtime
// (the runtime side here never runs it) and returns its path.
func FakeHook(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "leakguard-hook")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
