package nristate_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/hook/nristate"
)

func TestWriteReadAndFreshness(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nri", "state.json")
	if _, err := nristate.Read(path); !errors.Is(err, nristate.ErrNoState) {
		t.Fatalf("Read of a missing file = %v, want ErrNoState", err)
	}
	now := time.Now().Round(0)
	in := nristate.State{PID: 42, Connected: true, Since: now.Add(-time.Minute), Updated: now, Injected: 7}
	if err := nristate.Write(path, in); err != nil {
		t.Fatal(err)
	}
	got, err := nristate.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.PID != 42 || !got.Connected || !got.Updated.Equal(now) || !got.Since.Equal(in.Since) || got.Injected != 7 {
		t.Fatalf("Read = %+v, want %+v", got, in)
	}
	if !got.ConnectedAt(now.Add(nristate.StaleAfter)) || got.ConnectedAt(now.Add(nristate.StaleAfter+time.Second)) {
		t.Error("freshness: connected until StaleAfter, not after")
	}
	got.Connected = false
	if got.ConnectedAt(now) {
		t.Error("a disconnected plugin reads as connected")
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("temp files left: %v", ents)
	}
}

// A FIFO is never waited on, a symlink never followed, a huge file never
// read whole.
func TestReadHostileFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("/etc/hostname", link); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge")
	if err := os.WriteFile(huge, []byte(`{"pid":1,"x":"`+strings.Repeat("x", 1<<20)+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, link, huge} {
		done := make(chan error, 1)
		go func() { _, err := nristate.Read(p); done <- err }()
		select {
		case err := <-done:
			if err == nil || errors.Is(err, nristate.ErrNoState) {
				t.Errorf("Read(%s) = %v, want a refusal", filepath.Base(p), err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Read(%s) hung", filepath.Base(p))
		}
	}
}

// A state written under a clock that was later stepped back (a node that
// booted with its RTC ahead, then NTP) must not read as connected until the
// clock catches up: a file dated in the future is no proof of a live writer.
func TestFutureUpdatedIsStale(t *testing.T) {
	now := time.Now()
	s := nristate.State{Connected: true, Since: now, Updated: now.Add(time.Hour)}
	if s.ConnectedAt(now) {
		t.Error("a state updated an hour in the future reads as connected")
	}
	path := filepath.Join(t.TempDir(), "state.json")
	if err := nristate.Write(path, s); err != nil {
		t.Fatal(err)
	}
	got, err := nristate.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.ConnectedAt(now) {
		t.Error("a state file dated an hour ahead reads as connected")
	}
	// A small skew between writer and reader is not staleness.
	s.Updated = now.Add(time.Second)
	if !s.ConnectedAt(now) {
		t.Error("a state a second ahead reads as stale")
	}
}
