package guard_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
)

func (f *fixture) statePath(name string) string { return filepath.Join(f.stateDir, name) }

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Lstat(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

func touch(t *testing.T, path string, age time.Duration) {
	t.Helper()
	if err := os.WriteFile(path, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if age > 0 {
		past := time.Now().Add(-age)
		if err := os.Chtimes(path, past, past); err != nil {
			t.Fatal(err)
		}
	}
}

// CHECK of an attachment without a record leaves no lock file behind.
func TestCheckWithoutRecordLeavesNoLock(t *testing.T) {
	f := newFixture(t)
	mustFailWith(t, f.check("1.0.0"), "no leakguard record")
	if lock := f.statePath(f.key().Name() + ".lock"); exists(t, lock) {
		t.Fatalf("CHECK without a record left %s", lock)
	}
}

// GC removes lock files that no record or tombstone names, and temp files of
// interrupted record writes, each only while holding the attachment's lock:
// a lock someone holds (an ADD in flight) is left alone, without waiting.
// A FIFO at a lock path (which no one can lock) is removed, not waited on.
func TestGCRemovesStaleLocksAndTemps(t *testing.T) {
	f := newFixture(t)
	f.add("1.1.0")
	st, err := store.Open(f.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	name := func(cid string) string { return record.Key{Network: netName, ContainerID: cid, IfName: "eth0"}.Name() }
	stale := f.statePath(name("stale") + ".lock")
	touch(t, stale, 0)
	fifo := f.statePath(name("fifo") + ".lock")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := st.LockName(name("busy"), time.Second) // an ADD in flight
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Release(true)
	tomb := f.loadRecord()
	tomb.ContainerID = "tombstoned"
	if err := saveTombstone(t, st, tomb); err != nil {
		t.Fatal(err)
	}
	tombLock := f.statePath(name("tombstoned") + ".lock")
	touch(t, tombLock, 0)
	killedSave := f.statePath(".tmp-" + f.key().Name() + ".new") // ADD killed mid-Save
	touch(t, killedSave, 0)
	killedOther := f.statePath(".tmp-" + name("stale") + ".new")
	touch(t, killedOther, 0)
	oldRandom, freshRandom := f.statePath(".tmp-0123456789abcdef"), f.statePath(".tmp-fedcba9876543210")
	touch(t, oldRandom, time.Hour)
	touch(t, freshRandom, 0)

	start := time.Now()
	if err := f.gc(map[string]any{"cni.dev/valid-attachments": []map[string]string{{"containerID": f.cid, "ifname": "eth0"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if took := time.Since(start); took > f.plugin.LockTimeout {
		t.Fatalf("GC took %v: it waited for a held lock", took)
	}
	for path, want := range map[string]bool{
		stale: false, fifo: false, killedSave: false, killedOther: false, oldRandom: false,
		f.statePath(name("busy") + ".lock"): true, tombLock: true, freshRandom: true,
		f.statePath(f.key().Name() + ".lock"): true, f.statePath(f.key().Name() + ".json"): true,
	} {
		if got := exists(t, path); got != want {
			t.Errorf("after GC %s exists = %v, want %v", filepath.Base(path), got, want)
		}
	}
	busy.Release(true)
	touch(t, stale, 0)
	if err := f.gc(map[string]any{"cni.dev/valid-attachments": []map[string]string{{"containerID": f.cid, "ifname": "eth0"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if exists(t, stale) {
		t.Errorf("a second GC left the stale lock %s", stale)
	}
}

// DEL removes its attachment's own leftover temp file (a killed write of its
// record), and nothing of anyone else: not another attachment's, not a file
// of another owner, not one that is not a regular file.
func TestDelRemovesItsOwnTempFile(t *testing.T) {
	f := newFixture(t)
	f.add("1.0.0")
	own := f.statePath(".tmp-" + f.key().Name() + ".new")
	touch(t, own, 0)
	g := f.sibling()
	theirs := f.statePath(".tmp-" + g.key().Name() + ".new")
	touch(t, theirs, 0)
	random := f.statePath(".tmp-0123456789abcdef")
	touch(t, random, 0)
	if err := f.del(f.podPath, "1.0.0", f.prevResult()); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if exists(t, own) {
		t.Errorf("DEL left its attachment's temp file %s", own)
	}
	for _, p := range []string{theirs, random} {
		if !exists(t, p) {
			t.Errorf("DEL removed %s, not its attachment's", p)
		}
	}

	// Files at g's temp path that are not regular files of ours stay.
	if err := os.Chown(theirs, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := g.del(g.podPath, "1.0.0", g.prevResult()); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if !exists(t, theirs) {
		t.Errorf("DEL removed a temp file of uid %d", nobody)
	}
	if err := os.Remove(theirs); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(theirs, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.del(g.podPath, "1.0.0", g.prevResult()); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if !exists(t, theirs) {
		t.Errorf("DEL removed a FIFO at its temp path")
	}
}
