package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// With a log file: JSON lines there from the level up, errors also on
// stderr, nothing else on stderr.
func TestFileAndStderr(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lg.log")
	var stderr bytes.Buffer
	log, closeLog := New(path, slog.LevelInfo, &stderr)
	log.With("containerID", "c1").Debug("hidden")
	log.Info("recorded", "n", 1)
	log.Error("boom")
	closeLog()

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 log lines (info, error), got %q", b)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec["msg"] != "recorded" {
		t.Fatalf("first line not the JSON info record: %q (%v)", lines[0], err)
	}
	if s := stderr.String(); !strings.Contains(s, "boom") || strings.Contains(s, "recorded") {
		t.Fatalf("stderr should carry the error only: %q", s)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("log file mode %v, want 0600", fi.Mode().Perm())
	}
}

// Without a log file, warnings and errors go to stderr; an unopenable log
// file is reported there and does not stop logging.
func TestNoFileAndBadFile(t *testing.T) {
	var stderr bytes.Buffer
	log, closeLog := New("", slog.LevelInfo, &stderr)
	log.Info("quiet")
	log.Warn("careful")
	closeLog()
	if s := stderr.String(); !strings.Contains(s, "careful") || strings.Contains(s, "quiet") {
		t.Fatalf("stderr = %q", s)
	}

	stderr.Reset()
	log, closeLog = New(filepath.Join(t.TempDir(), "missing", "lg.log"), slog.LevelInfo, &stderr)
	log.Error("still logged")
	closeLog()
	if s := stderr.String(); !strings.Contains(s, "cannot open log file") || !strings.Contains(s, "still logged") {
		t.Fatalf("stderr = %q", s)
	}
}
