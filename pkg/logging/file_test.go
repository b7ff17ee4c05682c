package logging

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// withDeadline runs f and fails the test if it has not returned within 5 s:
// opening a FIFO without O_NONBLOCK waits for a reader forever.
func withDeadline(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

// TestOpenFileRefuses: a log path that is a FIFO (with or without a reader),
// a symlink (to a file outside, or dangling), a directory, a socket, a hard
// link, a file of another user, or in a directory others can write to is
// refused without blocking and without writing anything anywhere; New then
// logs to stderr, with the reason, and goes on.
func TestOpenFileRefuses(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "outside")
	must(t, os.WriteFile(outside, []byte("keep\n"), 0o600))
	tests := []struct {
		name string
		mk   func(t *testing.T, p string)
		want error
	}{
		{"fifo", func(t *testing.T, p string) { must(t, syscall.Mkfifo(p, 0o600)) }, ErrNotRegular},
		{"fifo with a reader", func(t *testing.T, p string) {
			must(t, syscall.Mkfifo(p, 0o600))
			r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
			must(t, err)
			t.Cleanup(func() { r.Close() })
		}, ErrNotRegular},
		{"symlink to a file outside", func(t *testing.T, p string) { must(t, os.Symlink(outside, p)) }, ErrNotRegular},
		{"dangling symlink", func(t *testing.T, p string) { must(t, os.Symlink(filepath.Join(t.TempDir(), "new"), p)) }, ErrNotRegular},
		{"directory", func(t *testing.T, p string) { must(t, os.Mkdir(p, 0o700)) }, ErrNotRegular},
		{"socket", func(t *testing.T, p string) {
			l, err := net.Listen("unix", p)
			must(t, err)
			t.Cleanup(func() { l.Close() })
		}, ErrNotRegular},
		{"hard link to a file outside", func(t *testing.T, p string) { must(t, os.Link(outside, p)) }, ErrHardLinked},
		{"file of another user", func(t *testing.T, p string) {
			must(t, os.WriteFile(p, nil, 0o666))
			must(t, os.Chown(p, 4242, 4242))
		}, ErrNotOwned},
		{"directory of another user", func(t *testing.T, p string) { must(t, os.Chown(filepath.Dir(p), 4242, 4242)) }, ErrNotOwned},
		{"directory writable by others", func(t *testing.T, p string) { must(t, os.Chmod(filepath.Dir(p), 0o777)) }, ErrOpenDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "lg.log")
			tt.mk(t, p)
			withDeadline(t, "OpenFile", func() {
				f, err := OpenFile(p, 0o600)
				if !errors.Is(err, tt.want) {
					if f != nil {
						f.Close()
					}
					t.Errorf("OpenFile: %v, want %v", err, tt.want)
				}
			})
			var stderr bytes.Buffer
			withDeadline(t, "New", func() {
				log, closeLog := New(p, slog.LevelInfo, &stderr)
				log.Error("still logged")
				closeLog()
			})
			if s := stderr.String(); !strings.Contains(s, "cannot open log file "+p) || !strings.Contains(s, tt.want.Error()) ||
				!strings.Contains(s, "still logged") {
				t.Errorf("stderr = %q", s)
			}
			if b, _ := os.ReadFile(outside); string(b) != "keep\n" {
				t.Errorf("file outside written: %q", b)
			}
		})
	}
}

// TestOpenFileAppends: a new file is created with the mode asked for; an
// existing one of ours is appended to; a sticky world-writable directory
// (like /tmp) is fine.
func TestOpenFileAppends(t *testing.T) {
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o777|os.ModeSticky))
	p := filepath.Join(dir, "lg.log")
	for _, line := range []string{"one\n", "two\n"} {
		f, err := OpenFile(p, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(line); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "one\ntwo\n" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("content %q mode %v", b, fi.Mode().Perm())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
