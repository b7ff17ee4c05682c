package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
	"github.com/leakguard/leakguard/pkg/netns/nsident"
)

func newRecord(k record.Key) *record.Record {
	return &record.Record{Key: k, Netns: nsident.Identity{Dev: 4, Ino: 4026532000}}
}

// Whatever a container ID or network name holds, the record stays a single
// file directly inside the state dir, and distinct keys never collide.
func TestFileNamesCannotEscape(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	keys := []record.Key{
		{Network: "../../etc", ContainerID: "../passwd", IfName: "eth0"},
		{Network: "/", ContainerID: "/", IfName: "/"},
		{Network: "..", ContainerID: "..", IfName: ".."},
		{Network: "a_b", ContainerID: "c", IfName: "eth0"},
		{Network: "a", ContainerID: "b_c", IfName: "eth0"},
		{Network: "net", ContainerID: strings.Repeat("x", 400), IfName: "eth0"},
		{Network: "net", ContainerID: strings.Repeat("x", 399) + "y", IfName: "eth0"},
		{Network: "n\x00", ContainerID: "%2F", IfName: "e\n"},
	}
	seen := map[string]bool{}
	for _, k := range keys {
		p := s.recordPath(k)
		if filepath.Dir(p) != s.Dir() || strings.ContainsRune(filepath.Base(p), '/') {
			t.Fatalf("key %q maps outside the state dir: %s", k, p)
		}
		if seen[p] {
			t.Fatalf("key %q collides at %s", k, p)
		}
		seen[p] = true
		if err := s.Save(newRecord(k)); err != nil {
			t.Fatalf("save %q: %v", k, err)
		}
		got, err := s.Load(k)
		if err != nil || got == nil || got.Key != k {
			t.Fatalf("load %q = %+v, %v", k, got, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("files appeared beside the state dir: %v", ents)
	}
	if recs, _, _ := s.Entries(); len(recs) != len(keys) {
		t.Fatalf("Entries = %d records, want %d", len(recs), len(keys))
	}
}

func TestModesAndAtomicReplace(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "shared")
	if err := os.MkdirAll(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(shared); err == nil || !strings.Contains(err.Error(), "0700") {
		t.Fatalf("an existing non-private dir must be refused, got %v", err)
	}
	if fi, _ := os.Stat(shared); fi.Mode().Perm() != 0o755 {
		t.Fatalf("a refused dir must not be chmodded: %v", fi.Mode().Perm())
	}
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v, want 0700", fi.Mode().Perm())
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	r := newRecord(k)
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.recordPath(k))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("record mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	r.IPs = []string{"10.0.0.1/32"}
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(k)
	if err != nil || len(got.IPs) != 1 {
		t.Fatalf("replaced record = %+v, %v", got, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, tmpPrefix+"*")); len(m) != 0 {
		t.Fatalf("temp files left: %v", m)
	}
}

func TestLoadDiscardsBadRecords(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	for name, content := range map[string]string{
		"garbage":      "not json",
		"future":       `{"schema":99,"containerID":"c","ifName":"eth0","bootID":"x","netns":{"dev":1,"ino":2}}`,
		"other key":    `{"schema":1,"network":"n","containerID":"OTHER","ifName":"eth0","bootID":"` + s.BootID() + `","netns":{"dev":1,"ino":2}}`,
		"no netns":     `{"schema":1,"network":"n","containerID":"c","ifName":"eth0","bootID":"` + s.BootID() + `"}`,
		"empty object": `{}`,
	} {
		if err := os.WriteFile(s.recordPath(k), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := s.Load(k)
		var d *DiscardedError
		if r != nil || !errors.As(err, &d) || d.MovedTo == "" {
			t.Fatalf("%s: Load = %v, %v; want discarded and moved aside", name, r, err)
		}
		if b, _ := os.ReadFile(d.MovedTo); string(b) != content {
			t.Fatalf("%s: moved-aside copy differs", name)
		}
	}
	if r, err := s.Load(k); r != nil || err != nil {
		t.Fatalf("after discards Load = %v, %v; want nothing", r, err)
	}
}

// The lock excludes concurrent holders of one attachment, never blocks other
// attachments, and survives Release(remove) races.
func TestLockExclusion(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	other := record.Key{Network: "n", ContainerID: "d", IfName: "eth0"}

	l, err := s.Lock(k, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(k, 30*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("second lock = %v, want timeout", err)
	}
	lo, err := s.Lock(other, 30*time.Millisecond)
	if err != nil {
		t.Fatalf("other attachment blocked: %v", err)
	}
	lo.Release(true)
	l.Release(true)

	var mu sync.Mutex
	inside, maxInside := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			l, err := s.Lock(k, 10*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			maxInside = max(maxInside, inside)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			inside--
			mu.Unlock()
			l.Release(i%2 == 0)
		}(i)
	}
	wg.Wait()
	if maxInside != 1 {
		t.Fatalf("%d holders at once", maxInside)
	}
}

func TestRemoveStaleRandomTemps(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	old, err := s.writeTemp("", []byte("partial"), false)
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	fresh, err := s.writeTemp("", []byte("in flight"), false)
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	if err := s.Save(newRecord(k)); err != nil {
		t.Fatal(err)
	}
	if n, errs := s.RemoveLeftovers(nil, 10*time.Minute); len(errs) != 0 || n.Temps != 1 {
		t.Fatalf("RemoveLeftovers = %+v, %v; want 1 temp file removed", n, errs)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp should be gone: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("a fresh temp file must stay: %v", err)
	}
	if r, err := s.Load(k); err != nil || r == nil {
		t.Fatalf("records are never temp files: %v %v", r, err)
	}
}

// The crash window of Save, made deterministic: a writer that dies after
// writing its temp file (fully or partly) and before the rename leaves the
// previous record intact, and the temp file is never read as a record.
func TestCrashBeforeRenameKeepsPreviousRecord(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	old := newRecord(k)
	old.IPs = []string{"10.0.0.1/32"}
	if err := s.Save(old); err != nil {
		t.Fatal(err)
	}
	next := newRecord(k)
	next.IPs = []string{"10.0.0.2/32"}
	b, err := encode(next)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{len(b), len(b) / 2, 1} { // complete and torn temp files
		if _, err := s.writeTemp("", b[:n], false); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Load(k)
	if err != nil || got == nil || len(got.IPs) != 1 || got.IPs[0] != "10.0.0.1/32" {
		t.Fatalf("after a crash before rename Load = %+v, %v; want the previous record", got, err)
	}
	recs, _, problems := s.Entries()
	if len(recs) != 1 || len(problems) != 0 {
		t.Fatalf("Entries = %d records, problems %v; temp files must be invisible", len(recs), problems)
	}
}

// A read-only store reports unusable files but never moves, removes or
// writes anything.
func TestReadOnlyStoreChangesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	if err := s.Save(newRecord(k)); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad_x_eth0.json")
	if err := os.WriteFile(bad, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, problems := ro.Entries()
	var d *DiscardedError
	if len(recs) != 1 || len(problems) != 1 || !errors.As(problems[0], &d) || !d.Kept {
		t.Fatalf("Entries = %d records, problems %v; want 1 and the bad file reported as kept", len(recs), problems)
	}
	if _, err := os.Stat(bad); err != nil {
		t.Fatalf("a read-only store moved the bad file: %v", err)
	}
	if err := ro.Save(newRecord(k)); err == nil {
		t.Fatal("Save on a read-only store must fail")
	}
	if err := ro.Remove(k); err == nil {
		t.Fatal("Remove on a read-only store must fail")
	}
	if _, err := OpenReadOnly(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("OpenReadOnly must not create a missing dir")
	}
}

// TombstonesOf reads exactly one key's tombstones: a key whose name ends
// like another's ("a-lg_..." vs "lg_...") is not taken for it.
func TestTombstonesOfOneKey(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(network string) *record.Record {
		return &record.Record{Schema: record.Schema, Key: record.Key{Network: network, ContainerID: "c1", IfName: "eth0"},
			BootID: st.BootID(), Created: time.Now(), Updated: time.Now(), Netns: nsident.Identity{Dev: 1, Ino: 2}}
	}
	for _, n := range []string{"lg", "a-lg", "lg"} {
		if _, err := st.SaveTombstone(mk(n)); err != nil {
			t.Fatal(err)
		}
	}
	got, problems := st.TombstonesOf(mk("lg").Key)
	if len(problems) != 0 || len(got) != 2 {
		t.Fatalf("want the two tombstones of lg/c1/eth0, got %d (problems %v)", len(got), problems)
	}
	for _, e := range got {
		if e.Record.Network != "lg" || e.Record.TombstonedAt == nil {
			t.Fatalf("wrong tombstone %s: %+v", e.Path, e.Record.Key)
		}
	}
	if got, _ := st.TombstonesOf(record.Key{Network: "none", ContainerID: "c1", IfName: "eth0"}); len(got) != 0 {
		t.Fatalf("no tombstone of another key expected, got %d", len(got))
	}
}
