package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

// badContents are state files of every content-level kind, for key k.
func badContents(t *testing.T, s *Store, k record.Key) map[string]struct {
	content string
	kind    DiscardKind
} {
	t.Helper()
	valid := func(mutate func(r *record.Record)) string {
		r := newRecord(k)
		r.Schema, r.BootID = record.Schema, s.BootID()
		mutate(r)
		b, err := encode(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	return map[string]struct {
		content string
		kind    DiscardKind
	}{
		"garbage":       {"not json", Corrupt},
		"future schema": {valid(func(r *record.Record) { r.Schema = 99 }), Corrupt},
		"no netns":      {valid(func(r *record.Record) { r.Netns.Dev, r.Netns.Ino = 0, 0 }), Corrupt},
		"other key":     {valid(func(r *record.Record) { r.ContainerID = "OTHER" }), Corrupt},
		"other boot":    {valid(func(r *record.Record) { r.BootID = "00000000-0000-0000-0000-000000000000" }), OtherBoot},
	}
}

func discardOf(t *testing.T, what string, err error) *DiscardedError {
	t.Helper()
	var d *DiscardedError
	if !errors.As(err, &d) {
		t.Fatalf("%s: want a *DiscardedError, got %v", what, err)
	}
	return d
}

// One decode path: Load, the walk of Entries and DEL's sweep judge a file
// alike, whether it is a record or a tombstone; another boot's file is
// removed, any other bad file moved aside unchanged.
func TestEveryReaderJudgesAFileAlike(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	check := func(name, reader, path, content string, kind DiscardKind, err error) {
		t.Helper()
		d := discardOf(t, name+" via "+reader, err)
		if d.Kind != kind || d.Path != path {
			t.Fatalf("%s via %s: discarded %s %s, want %s %s", name, reader, d.Kind, d.Path, kind, path)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s via %s: file still at %s", name, reader, path)
		}
		if kind == OtherBoot {
			if d.MovedTo != "" {
				t.Fatalf("%s via %s: another boot's file must be removed, was moved to %s", name, reader, d.MovedTo)
			}
			return
		}
		if b, err := os.ReadFile(d.MovedTo); err != nil || string(b) != content {
			t.Fatalf("%s via %s: moved-aside copy %q (%v), want %q", name, reader, b, err, content)
		}
	}
	for name, c := range badContents(t, s, k) {
		write := func(path string) {
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		path := s.recordPath(k)
		write(path)
		r, err := s.Load(k)
		if r != nil {
			t.Fatalf("%s: Load returned a record", name)
		}
		check(name, "Load", path, c.content, c.kind, err)

		write(path)
		recs, _, problems := s.Entries()
		if len(recs) != 0 || len(problems) != 1 {
			t.Fatalf("%s: Entries = %d records, problems %v; want the file discarded", name, len(recs), problems)
		}
		check(name, "Entries", path, c.content, c.kind, problems[0])

		tomb := s.tombPath(k)
		write(tomb)
		_, tombs, problems := s.Entries()
		if len(tombs) != 0 || len(problems) != 1 {
			t.Fatalf("%s: Entries = %d tombstones, problems %v; want the file discarded", name, len(tombs), problems)
		}
		check(name, "Entries (tombstone)", tomb, c.content, c.kind, problems[0])

		write(tomb)
		tombs, problems = s.SweepWindow(0, 8, func(int) int { return 0 })
		if len(tombs) != 0 || len(problems) != 1 {
			t.Fatalf("%s: SweepWindow = %d tombstones, problems %v; want the file discarded", name, len(tombs), problems)
		}
		check(name, "SweepWindow", tomb, c.content, c.kind, problems[0])
	}
}

// A record saved under another attachment's file name is not that
// attachment's: every reader refuses it (GC would otherwise lock and reap
// the key the content names, from a file that is not its record).
func TestRecordUnderAnotherNameIsCorrupt(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	mine := record.Key{Network: "n", ContainerID: "mine", IfName: "eth0"}
	other := record.Key{Network: "n", ContainerID: "other", IfName: "eth0"}
	if err := s.Save(newRecord(other)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(s.recordPath(other), s.recordPath(mine)); err != nil {
		t.Fatal(err)
	}
	recs, _, problems := s.Entries()
	if len(recs) != 0 || len(problems) != 1 || discardOf(t, "Entries", problems[0]).Kind != Corrupt {
		t.Fatalf("Entries = %d records, problems %v; want the misnamed record discarded as corrupt", len(recs), problems)
	}
	if _, err := os.Stat(s.recordPath(mine)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("misnamed record left in place: %v", err)
	}
}

// A read-only store reports every kind, with the same verdict as a
// writable one, and leaves each file in place.
func TestReadOnlyReportsEveryKind(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]DiscardKind{}
	for name := range badContents(t, s, record.Key{}) {
		k := record.Key{Network: "n", ContainerID: strings.ReplaceAll(name, " ", "-"), IfName: "eth0"}
		c := badContents(t, s, k)[name]
		path := s.recordPath(k)
		if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		want[path] = c.kind
	}
	_, _, problems := ro.Entries()
	got := map[string]DiscardKind{}
	for _, p := range problems {
		d := discardOf(t, "read-only Entries", p)
		if !d.Kept || d.MovedTo != "" {
			t.Fatalf("read-only store changed %s: %v", d.Path, d)
		}
		got[d.Path] = d.Kind
	}
	if len(got) != len(want) {
		t.Fatalf("read-only Entries reported %v, want %v", got, want)
	}
	for p, k := range want {
		if got[p] != k {
			t.Fatalf("%s reported as %s, want %s", p, got[p], k)
		}
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("read-only store moved %s: %v", p, err)
		}
	}
}
