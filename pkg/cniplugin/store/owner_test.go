package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

// nobody is a uid that is not the test's (tests run as root).
const nobody = 65534

// A state dir someone else controls is refused, never used: its records
// decide what DEL deletes. The error names the path and the owner.
func TestStateDirMustBeARealDirOfOurs(t *testing.T) {
	base := t.TempDir()
	private := filepath.Join(base, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(base, "foreign")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(foreign, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ dir, mentions string }{
		{foreign, "owned by uid 65534"},
		{link, "symlink"},
		{file, "regular file, not a directory"},
	} {
		for name, open := range map[string]func(string) (*Store, error){"Open": Open, "OpenReadOnly": OpenReadOnly} {
			_, err := open(c.dir)
			if err == nil || !strings.Contains(err.Error(), c.dir) || !strings.Contains(err.Error(), c.mentions) {
				t.Errorf("%s(%s) = %v; want a refusal naming the path and %q", name, c.dir, err, c.mentions)
			}
		}
	}
	if _, err := Open(private); err != nil {
		t.Fatalf("a private dir of ours must be usable: %v", err)
	}
}

// The tombstone dir obeys the same rule as the state dir: a symlink is never
// followed (root would write outside the state dir), a dir of another owner
// or open to others is never read or written.
func TestTombstoneDirMustBeARealDirOfOurs(t *testing.T) {
	for name, plant := range map[string]func(t *testing.T, tombs, outside string){
		"symlink": func(t *testing.T, tombs, outside string) {
			if err := os.Symlink(outside, tombs); err != nil {
				t.Fatal(err)
			}
		},
		"other owner": func(t *testing.T, tombs, _ string) {
			if err := os.Mkdir(tombs, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(tombs, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		},
		"open to others": func(t *testing.T, tombs, _ string) {
			if err := os.Mkdir(tombs, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(tombs, 0o733); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(filepath.Join(t.TempDir(), "state"))
			if err != nil {
				t.Fatal(err)
			}
			outside := t.TempDir()
			tombs := filepath.Join(s.Dir(), tombDir)
			plant(t, tombs, outside)
			// A forged tombstone where the walk would find it.
			k := record.Key{Network: "n", ContainerID: "forged", IfName: "eth0"}
			forged := newRecord(k)
			forged.Schema, forged.BootID = record.Schema, s.BootID()
			b, err := encode(forged)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(tombs, "00000000000000000001-"+k.Name()+tombExt), b, 0o600); err != nil {
				t.Fatal(err)
			}

			live := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
			if err := s.Save(newRecord(live)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Tombstone(live); err == nil || !strings.Contains(err.Error(), tombs) {
				t.Errorf("Tombstone into %s = %v; want a refusal naming it", name, err)
			}
			if _, err := os.Stat(s.recordPath(live)); err != nil {
				t.Errorf("the record must stay when its tombstone cannot be kept: %v", err)
			}
			if _, err := s.SaveTombstone(newRecord(live)); err == nil {
				t.Errorf("SaveTombstone into %s succeeded", name)
			}
			recs, got, problems := s.Entries()
			if len(recs) != 1 || len(got) != 0 || len(problems) != 1 || !strings.Contains(problems[0].Error(), tombs) {
				t.Errorf("Entries = %d records, %d tombstones, problems %v; want the tombstone dir refused", len(recs), len(got), problems)
			}
			if got, problems := s.SweepWindow(0, 8, func(int) int { return 0 }); len(got) != 0 || len(problems) != 1 {
				t.Errorf("SweepWindow = %d tombstones, problems %v; want the tombstone dir refused", len(got), problems)
			}
			ents, _ := os.ReadDir(outside)
			for _, e := range ents {
				if e.Name() != "00000000000000000001-"+k.Name()+tombExt {
					t.Errorf("file written outside the state dir: %s", e.Name())
				}
			}
		})
	}
}

// The state dir is checked when it is read, too: swapped for a symlink after
// Open, it is not walked.
func TestStateDirCheckedAtEachWalk(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(base, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o700); err != nil {
		t.Fatal(err)
	}
	k := record.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	r := newRecord(k)
	r.Schema, r.BootID = record.Schema, s.BootID()
	b, _ := encode(r)
	if err := os.WriteFile(filepath.Join(elsewhere, k.Name()+recordExt), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, dir); err != nil {
		t.Fatal(err)
	}
	recs, _, problems := s.Entries()
	if len(recs) != 0 || len(problems) == 0 || !errors.Is(problems[0], errNotOurs) {
		t.Fatalf("Entries through a symlinked state dir = %d records, problems %v; want a refusal", len(recs), problems)
	}
}
