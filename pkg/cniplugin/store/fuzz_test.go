package store_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/cniplugin/store"
)

// The fuzz targets below write their input where the store reads a record
// or a tombstone and decode it through the store's own API. Seed corpora in
// testdata/fuzz/FuzzXxx run in plain `go test`. A record only decodes for the
// boot that wrote it, so every bootPlaceholder in the input is replaced by
// the current boot ID first.
const bootPlaceholder = "@BOOT@"

var fuzzKey = record.Key{Network: "net", ContainerID: "c1", IfName: "eth0"}

// fuzzStore opens a store in a fresh directory, one per fuzz worker process:
// executions run one after another and each empties it first. It is on
// /dev/shm when that is a tmpfs: the store then skips fsync, which would
// otherwise bound the executions per second.
func fuzzStore(f *testing.F) *store.Store {
	dir := f.TempDir()
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC {
		shm, err := os.MkdirTemp("/dev/shm", "leakguard-fuzz-")
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { os.RemoveAll(shm) })
		dir = shm
	}
	s, err := store.Open(filepath.Join(dir, "state"))
	if err != nil {
		f.Fatal(err)
	}
	return s
}

func emptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
}

func withBoot(s *store.Store, b []byte) []byte {
	return bytes.ReplaceAll(b, []byte(bootPlaceholder), []byte(s.BootID()))
}

// FuzzLoadRecord: Load never panics; it returns either a record that is
// valid, of this boot and of the key asked for, or a *DiscardedError after
// which the file is no longer at the record's path (kept byte for byte where
// it says it moved it). A record it returns survives Save and Load
// unchanged (decode, encode, decode is a fixed point).
func FuzzLoadRecord(f *testing.F) {
	s := fuzzStore(f)
	path := filepath.Join(s.Dir(), fuzzKey.Name()+".json")
	f.Fuzz(func(t *testing.T, data []byte) {
		emptyDir(t, s.Dir())
		data = withBoot(s, data)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := s.Load(fuzzKey)
		if err != nil {
			assertDiscarded(t, err, path, data)
			return
		}
		if r == nil {
			t.Fatalf("Load returned neither a record nor an error for an existing file %q", data)
		}
		assertUsable(t, s, r)
		if r.Key != fuzzKey {
			t.Fatalf("Load(%s) returned the record of %s", fuzzKey, r.Key)
		}
		first := encode(t, r)
		if err := s.Save(r); err != nil {
			t.Fatalf("Save of a loaded record: %v", err)
		}
		again, err := s.Load(fuzzKey)
		if err != nil || again == nil {
			t.Fatalf("Load after Save = %v, %v (record %s)", again, err, first)
		}
		if second := encode(t, again); !bytes.Equal(first, second) {
			t.Fatalf("record changed through Save and Load:\n%s\n%s", first, second)
		}
	})
}

// FuzzLoadTombstone: Entries never panics on a tombstone file; it returns it
// as a valid tombstone of this boot (its time set, no pin), or reports it as
// a problem (an error, never a nil one) and the file leaves the tombstone
// dir. A tombstone it returns survives Rewrite and Entries unchanged.
func FuzzLoadTombstone(f *testing.F) {
	s := fuzzStore(f)
	dir := filepath.Join(s.Dir(), "tombstones")
	path := filepath.Join(dir, "01700000000000000000-"+fuzzKey.Name()+".tomb")
	f.Fuzz(func(t *testing.T, data []byte) {
		emptyDir(t, s.Dir())
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		data = withBoot(s, data)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		tomb, problems := loadTombstone(t, s)
		if tomb == nil {
			if len(problems) != 1 {
				t.Fatalf("tombstone %q neither returned nor reported once: %v", data, problems)
			}
			assertDiscarded(t, problems[0], path, data)
			return
		}
		if len(problems) > 0 {
			t.Fatalf("tombstone returned and reported: %v", problems)
		}
		if tomb.Path != path {
			t.Fatalf("tombstone returned from %s, written at %s", tomb.Path, path)
		}
		assertUsable(t, s, tomb.Record)
		if tomb.Record.TombstonedAt == nil || tomb.Record.Pin != nil {
			t.Fatalf("tombstone without its time or with a pin: %+v", tomb.Record)
		}
		first := encode(t, tomb.Record)
		if err := s.Rewrite(tomb.Path, tomb.Record); err != nil {
			t.Fatalf("Rewrite of a loaded tombstone: %v", err)
		}
		again, problems := loadTombstone(t, s)
		if again == nil || len(problems) > 0 {
			t.Fatalf("tombstone lost through Rewrite: %v (tombstone %s)", problems, first)
		}
		if second := encode(t, again.Record); !bytes.Equal(first, second) {
			t.Fatalf("tombstone changed through Rewrite and Entries:\n%s\n%s", first, second)
		}
	})
}

// loadTombstone returns the only tombstone Entries finds, if any.
func loadTombstone(t *testing.T, s *store.Store) (*store.Entry, []error) {
	t.Helper()
	recs, tombs, problems := s.Entries()
	if len(recs) > 0 || len(tombs) > 1 {
		t.Fatalf("Entries found %d records and %d tombstones; one tombstone file was written", len(recs), len(tombs))
	}
	if len(tombs) == 0 {
		return nil, problems
	}
	return &tombs[0], problems
}

// assertDiscarded checks a refusal is a *DiscardedError (a decoding or
// validation failure is reported, never a panic or a silent success) and
// that the file left path, moved aside unchanged or removed.
func assertDiscarded(t *testing.T, err error, path string, data []byte) {
	t.Helper()
	var d *store.DiscardedError
	if err == nil || !errors.As(err, &d) {
		t.Fatalf("file %q refused with %v, want a *store.DiscardedError", data, err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("discarded file still at %s (%v): %v", path, d, err)
	}
	if d.MovedTo != "" {
		kept, err := os.ReadFile(d.MovedTo)
		if err != nil || !bytes.Equal(kept, data) {
			t.Fatalf("discarded file not kept as it was at %s: %v", d.MovedTo, err)
		}
	}
}

func assertUsable(t *testing.T, s *store.Store, r *record.Record) {
	t.Helper()
	if err := r.Validate(); err != nil {
		t.Fatalf("store returned an invalid record: %v: %+v", err, r)
	}
	if r.BootID != s.BootID() {
		t.Fatalf("store returned a record of boot %q, this boot is %q", r.BootID, s.BootID())
	}
}

func encode(t *testing.T, r *record.Record) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("encode %+v: %v", r, err)
	}
	return b
}
