package store_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/leakguard/leakguard/pkg/cniplugin/store"
)

// Only an empty dir of ours that nobody else can write is made 0700; then
// Open accepts it. Anything else is left alone.
func TestAdopt(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(dir string) string
		adopted bool
		mode    os.FileMode
	}{
		{"fresh 0755", func(d string) string { return mkdir(t, d, 0o755) }, true, 0o700},
		{"0750", func(d string) string { return mkdir(t, d, 0o750) }, true, 0o700},
		{"already 0700", func(d string) string { return mkdir(t, d, 0o700) }, false, 0o700},
		{"group-writable", func(d string) string { return mkdir(t, d, 0o775) }, false, 0o775},
		{"world-writable", func(d string) string { return mkdir(t, d, 0o777) }, false, 0o777},
		{"not empty", func(d string) string {
			p := mkdir(t, d, 0o755)
			if err := os.WriteFile(filepath.Join(p, "x.json"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, false, 0o755},
		{"someone else's", func(d string) string {
			p := mkdir(t, d, 0o755)
			if err := os.Chown(p, 12345, 12345); err != nil {
				t.Fatal(err)
			}
			return p
		}, false, 0o755},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := c.prepare(t.TempDir())
			got, err := store.Adopt(dir)
			if err != nil || got != c.adopted {
				t.Fatalf("Adopt = %v, %v; want %v", got, err, c.adopted)
			}
			fi, err := os.Lstat(dir)
			if err != nil || fi.Mode().Perm() != c.mode {
				t.Fatalf("mode %v (%v), want %v", fi.Mode().Perm(), err, c.mode)
			}
			if c.adopted {
				if _, err := store.Open(dir); err != nil {
					t.Errorf("Open after Adopt: %v", err)
				}
			}
		})
	}

	t.Run("symlink", func(t *testing.T) {
		base := t.TempDir()
		target := mkdir(t, base, 0o755)
		link := filepath.Join(base, "link")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Adopt(link); err == nil {
			t.Error("a symlinked state dir followed")
		}
		if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o755 {
			t.Errorf("symlink target chmodded to %v", fi.Mode().Perm())
		}
	})
	t.Run("missing", func(t *testing.T) {
		if got, err := store.Adopt(filepath.Join(t.TempDir(), "none")); got || err != nil {
			t.Errorf("Adopt(missing) = %v, %v", got, err)
		}
	})
}

func mkdir(t *testing.T, parent string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(parent, "state")
	if err := os.Mkdir(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}
