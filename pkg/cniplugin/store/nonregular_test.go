package store

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

// hangAfter is how long a call may take before it counts as hung.
const hangAfter = 2 * time.Second

// within fails the test when fn has not returned after hangAfter. A reader
// blocked on one of fifos is then released (a writer opens it), so that the
// test binary can go on.
func within(t *testing.T, what string, fifos []string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(hangAfter):
		for _, f := range fifos {
			if fd, err := unix.Open(f, unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
				unix.Close(fd)
			}
		}
		<-done
		t.Fatalf("%s hung on a FIFO", what)
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Only regular files are ever read: a FIFO, a symlink (even to a valid
// record) or a socket at a record's path is discarded as not-regular-file
// without blocking, and moved aside.
func TestLoadNeverReadsANonRegularFile(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	path := s.recordPath(k)
	valid := filepath.Join(t.TempDir(), "valid.json")
	other := *s
	other.dir = filepath.Dir(valid)
	if err := other.writeAtomic(valid, newRecord(k), ""); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		plant func()
	}{
		{"fifo", func() { mkfifo(t, path) }},
		{"symlink", func() { must(t, os.Symlink(valid, path)) }},
		{"socket", func() {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			must(t, err)
			l.SetUnlinkOnClose(false)
			l.Close()
		}},
		{"directory", func() { must(t, os.Mkdir(path, 0o700)) }},
	} {
		name := c.name
		c.plant()
		var r *record.Record
		within(t, "Load of a "+name, []string{path}, func() { r, err = s.Load(k) })
		d := discardOf(t, name, err)
		if r != nil || d.Kind != NotRegular || !strings.Contains(d.Reason, name) || d.MovedTo == "" {
			t.Fatalf("Load of a %s = %v, %v; want it discarded as %s and moved aside", name, r, err, NotRegular)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left at the record path: %v", name, err)
		}
	}
}

// The walks (Entries, DEL's sweep) report a FIFO record or tombstone as
// not-regular-file instead of blocking on it or hiding it.
func TestWalksNeverBlockOnAFIFO(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	rec, tomb := s.recordPath(k), s.tombPath(k)
	mkfifo(t, rec)
	mkfifo(t, tomb)
	var problems []error
	within(t, "Entries", []string{rec, tomb}, func() { _, _, problems = s.Entries() })
	if len(problems) != 2 {
		t.Fatalf("Entries problems %v; want both FIFOs reported", problems)
	}
	for _, p := range problems {
		if d := discardOf(t, "Entries", p); d.Kind != NotRegular {
			t.Fatalf("Entries reported %v; want %s", d, NotRegular)
		}
	}
	mkfifo(t, tomb)
	within(t, "SweepWindow", []string{tomb}, func() {
		_, problems = s.SweepWindow(0, 8, func(int) int { return 0 })
	})
	if len(problems) != 1 || discardOf(t, "SweepWindow", problems[0]).Kind != NotRegular {
		t.Fatalf("SweepWindow problems %v; want the FIFO tombstone reported as %s", problems, NotRegular)
	}
}

// A lock path that is not a regular file is refused at once, never waited
// on or followed.
func TestLockRefusesANonRegularLockFile(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	path := s.lockPath(k)
	target := filepath.Join(t.TempDir(), "target")
	for _, c := range []struct {
		name  string
		plant func()
	}{
		{"fifo", func() { mkfifo(t, path) }},
		{"symlink", func() { must(t, os.Symlink(target, path)) }},
	} {
		name := c.name
		c.plant()
		var l *Lock
		within(t, "Lock on a "+name, []string{path}, func() { l, err = s.Lock(k, time.Second) })
		if l != nil {
			l.Release(false)
		}
		if err == nil || errors.Is(err, ErrLockTimeout) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), name) {
			t.Fatalf("Lock on a %s = %v; want a refusal naming the path and the type", name, err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Lock followed a symlink: %v", err)
		}
		must(t, os.Remove(path))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
