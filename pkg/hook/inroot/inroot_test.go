package inroot

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fixture is a rootfs next to a "host" directory holding a file the rootfs
// must never reach.
type fixture struct {
	root, host, hostFile string
}

const hostContent = "host secret\n"

func newFixture(t *testing.T) fixture {
	t.Helper()
	base := t.TempDir()
	f := fixture{root: filepath.Join(base, "rootfs"), host: filepath.Join(base, "host")}
	f.hostFile = filepath.Join(f.host, "file")
	for _, d := range []string{filepath.Join(f.root, "etc"), f.host} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(f.hostFile, []byte(hostContent), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) open(t *testing.T) *Root {
	t.Helper()
	r, err := Open(f.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (f fixture) hostUntouched(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(f.hostFile)
	if err != nil || string(b) != hostContent {
		t.Fatalf("host file changed: %q %v", b, err)
	}
}

func TestEscapingSymlinksStayInRoot(t *testing.T) {
	f := newFixture(t)
	rel, err := filepath.Rel(filepath.Join(f.root, "etc"), f.hostFile)
	if err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"etc/abs":    f.hostFile,                              // absolute host path
		"etc/rel":    rel,                                     // ../../host/file
		"etc/deep":   "../../../../../../../../" + f.hostFile, // clamped at the root
		"etc/chain":  "/etc/abs",                              // in-root link to an escaping link
		"etc/procfd": "/proc/self/root" + f.hostFile,          // magic link
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(f.root, name)); err != nil {
			t.Fatal(err)
		}
	}
	r := f.open(t)
	for name := range links {
		file, err := r.OpenRegular(name)
		if err == nil {
			b, _ := file.Read(1 << 20)
			file.Patch(0, []byte(hostContent[:4]), []byte("XXXX"))
			file.Close()
			t.Errorf("%s: opened a file (content %q); must not resolve outside the root", name, b)
		}
	}
	f.hostUntouched(t)
}

func TestInRootAbsoluteSymlinkIsFollowed(t *testing.T) {
	f := newFixture(t)
	target := filepath.Join(f.root, "usr/share/x.conf")
	os.MkdirAll(filepath.Dir(target), 0o755)
	os.WriteFile(target, []byte("old"), 0o644)
	os.Symlink("/usr/share/x.conf", filepath.Join(f.root, "etc/x.conf"))
	file, err := f.open(t).OpenRegular("etc/x.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if err := file.Patch(0, []byte("old"), []byte("new")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "new" {
		t.Fatalf("target = %q", b)
	}
}

func TestSymlinkedDirStaysInRoot(t *testing.T) {
	f := newFixture(t)
	os.Symlink(f.host, filepath.Join(f.root, "etc/gssproxy"))
	r := f.open(t)
	if _, _, err := r.ReadDirNames("etc/gssproxy", 8); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadDirNames through an escaping dir link: %v, want not-exist", err)
	}
	if _, err := r.OpenRegular("etc/gssproxy/file"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenRegular through an escaping dir link: %v, want not-exist", err)
	}
	f.hostUntouched(t)
}

func TestSpecialFilesAreNotOpened(t *testing.T) {
	f := newFixture(t)
	must(t, unix.Mkfifo(filepath.Join(f.root, "etc/fifo"), 0o644))
	must(t, unix.Mknod(filepath.Join(f.root, "etc/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mknod(filepath.Join(f.root, "etc/loop"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
	os.Mkdir(filepath.Join(f.root, "etc/dir"), 0o755)
	os.Symlink("/etc/fifo", filepath.Join(f.root, "etc/link-to-fifo"))
	r := f.open(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, name := range []string{"etc/fifo", "etc/null", "etc/loop", "etc/dir", "etc/link-to-fifo"} {
			if _, err := r.OpenRegular(name); !errors.Is(err, ErrNotRegular) {
				t.Errorf("%s: err = %v, want ErrNotRegular", name, err)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("OpenRegular blocked on a special file")
	}
}

func TestPatchKeepsInodeOwnerModeSize(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.root, "etc/x.conf")
	must(t, os.WriteFile(p, []byte("kernel_nfsd = yes\n"), 0o600))
	must(t, os.Chown(p, 1234, 5678))
	must(t, os.Chmod(p, 0o604))
	var before, after unix.Stat_t
	must(t, unix.Stat(p, &before))
	file, err := f.open(t).OpenRegular("etc/x.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	must(t, file.Patch(14, []byte("yes"), []byte("no ")))
	must(t, unix.Stat(p, &after))
	if after.Ino != before.Ino || after.Uid != 1234 || after.Gid != 5678 || after.Mode != before.Mode || after.Size != before.Size {
		t.Fatalf("before %+v after %+v", before, after)
	}
	if b, _ := os.ReadFile(p); string(b) != "kernel_nfsd = no \n" {
		t.Fatalf("content %q", b)
	}
	if err := file.Patch(14, []byte("yes"), []byte("no")); err == nil {
		t.Fatal("Patch accepted a change of length")
	}
}

// TestPatchRefuses: Patch writes nothing to a file that gained a hard link
// (its other name may be a host file), changed size or changed bytes since
// it was read.
func TestPatchRefuses(t *testing.T) {
	const content = "kernel_nfsd = yes\n"
	tests := map[string]struct {
		change func(t *testing.T, p string)
		want   error
	}{
		"hard link": {func(t *testing.T, p string) { must(t, os.Link(p, filepath.Join(filepath.Dir(p), "other"))) }, ErrHardLinked},
		"grown":     {func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte(content+"x"), 0o644)) }, ErrChanged},
		"rewritten": {func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte("kernel_nfsd = abc\n"), 0o644)) }, ErrChanged},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			p := filepath.Join(f.root, "etc/x.conf")
			must(t, os.WriteFile(p, []byte(content), 0o644))
			file, err := f.open(t).OpenRegular("etc/x.conf")
			if err != nil {
				t.Fatal(err)
			}
			defer file.Close()
			tt.change(t, p)
			before, _ := os.ReadFile(p)
			if err := file.Patch(14, []byte("yes"), []byte("no ")); !errors.Is(err, tt.want) {
				t.Fatalf("Patch: %v, want %v", err, tt.want)
			}
			if after, _ := os.ReadFile(p); !bytes.Equal(after, before) {
				t.Fatalf("file written: %q -> %q", before, after)
			}
		})
	}
}

// TestReadLimit: a file over the limit is refused from its size without
// being read (a sparse 4 GiB file returns at once), and one at the limit is
// read whole.
func TestReadLimit(t *testing.T) {
	f := newFixture(t)
	const limit = 1 << 10
	for name, size := range map[string]int64{"etc/at": limit, "etc/over": limit + 1, "etc/huge": 4 << 30} {
		p := filepath.Join(f.root, name)
		must(t, os.WriteFile(p, nil, 0o644))
		must(t, os.Truncate(p, size))
	}
	r := f.open(t)
	read := func(name string) ([]byte, error) {
		file, err := r.OpenRegular(name)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		return file.Read(limit)
	}
	if b, err := read("etc/at"); err != nil || len(b) != limit {
		t.Fatalf("at the limit: %d bytes, %v", len(b), err)
	}
	start := time.Now()
	for _, name := range []string{"etc/over", "etc/huge"} {
		if b, err := read(name); !errors.Is(err, ErrTooLarge) || b != nil {
			t.Fatalf("%s: %d bytes, %v; want ErrTooLarge", name, len(b), err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusing large files took %v", d)
	}
}

func TestBindMountIsNotCrossed(t *testing.T) {
	f := newFixture(t)
	os.MkdirAll(filepath.Join(f.root, "etc/gssproxy"), 0o755)
	mountFile := filepath.Join(f.root, "etc/gssproxy/24-x.conf")
	must(t, os.WriteFile(mountFile, nil, 0o644))
	must(t, unix.Mount(f.hostFile, mountFile, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(mountFile, unix.MNT_DETACH) })
	mountDir := filepath.Join(f.root, "etc/mnt")
	os.Mkdir(mountDir, 0o755)
	must(t, unix.Mount(f.host, mountDir, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(mountDir, unix.MNT_DETACH) })
	os.Symlink("/etc/mnt/file", filepath.Join(f.root, "etc/gssproxy/25-alias.conf"))

	r := f.open(t)
	for _, name := range []string{"etc/gssproxy/24-x.conf", "etc/mnt/file", "etc/gssproxy/25-alias.conf"} {
		if _, err := r.OpenRegular(name); !errors.Is(err, ErrCrossesMount) {
			t.Errorf("%s: err = %v, want ErrCrossesMount", name, err)
		}
	}
	if _, _, err := r.ReadDirNames("etc/mnt", 8); !errors.Is(err, ErrCrossesMount) {
		t.Errorf("ReadDirNames across a mount: %v", err)
	}
	f.hostUntouched(t)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	f := newFixture(t)
	for _, d := range []string{"srv/gss", "usr/etc", "data"} {
		os.MkdirAll(filepath.Join(f.root, d), 0o755)
	}
	os.WriteFile(filepath.Join(f.root, "srv/gss/gssproxy.conf"), nil, 0o644)
	links := map[string]string{
		"etc/gssproxy": "/srv/gss",           // absolute, in the root
		"etc/rel":      "../srv/gss",         // relative
		"etc/chain":    "/etc/rel/../gss",    // through another link, then ..
		"etc/up":       "../../../../../srv", // .. above the root stays at the root
		"etc/host":     f.host,               // a host path is taken inside the root
		"etc/dangling": "/nonexistent/dir",   // missing target: taken as is
		"etc/file":     "gssproxy/gssproxy.conf",
		"loop1":        "/loop2",
		"loop2":        "loop1",
		"data/self":    ".",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(f.root, name)); err != nil {
			t.Fatal(err)
		}
	}
	r := f.open(t)
	tests := []struct{ name, want string }{
		{"/", "/"},
		{"/etc", "/etc"},
		{"etc//./gssproxy/", "/srv/gss"},
		{"/etc/gssproxy/gssproxy.conf", "/srv/gss/gssproxy.conf"},
		{"/etc/gssproxy/missing/x", "/srv/gss/missing/x"},
		{"/etc/rel/gssproxy.conf", "/srv/gss/gssproxy.conf"},
		{"/etc/chain", "/srv/gss"},
		{"/etc/up/gss", "/srv/gss"},
		{"/etc/host/file", filepath.Join(f.host, "file")},
		{"/etc/dangling", "/nonexistent/dir"},
		{"/etc/dangling/../x", "/nonexistent/x"},
		{"/etc/file", "/srv/gss/gssproxy.conf"},
		{"/etc/file/x", "/srv/gss/gssproxy.conf/x"},
		{"/../../etc/gssproxy", "/srv/gss"},
		{"/data/self/self/self", "/data"},
	}
	for _, tt := range tests {
		got, err := r.Resolve(tt.name, nil)
		if err != nil || got.Path != tt.want || got.Opaque {
			t.Errorf("Resolve(%q) = %+v, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	if _, err := r.Resolve("/loop1/x", nil); !errors.Is(err, unix.ELOOP) {
		t.Errorf("symlink loop: err = %v, want ELOOP", err)
	}
	f.hostUntouched(t)
}

// TestResolveOpaque: the walk asks before each lookup and stops at a path
// whose content is not the image's, following no symlink there.
func TestResolveOpaque(t *testing.T) {
	f := newFixture(t)
	os.MkdirAll(filepath.Join(f.root, "run"), 0o755)
	os.Symlink("/etc", filepath.Join(f.root, "run/x"))
	os.Symlink("/run/x/y", filepath.Join(f.root, "etc/z"))
	r := f.open(t)
	var asked []string
	underRun := func(p string) bool { asked = append(asked, p); return p == "/run" || strings.HasPrefix(p, "/run/") }
	got, err := r.Resolve("/run/x/gssproxy", underRun)
	if err != nil || got != (Resolved{Path: "/run/x/gssproxy", Opaque: true, At: "/run"}) {
		t.Fatalf("got %+v, %v", got, err)
	}
	asked = nil
	got, err = r.Resolve("/etc/z/../a", underRun)
	if err != nil || got != (Resolved{Path: "/run/x/a", Opaque: true, At: "/run"}) {
		t.Fatalf("through a link: got %+v, %v", got, err)
	}
	if want := []string{"/etc", "/etc/z", "/run"}; !reflect.DeepEqual(asked, want) {
		t.Fatalf("asked %q, want %q", asked, want)
	}
}

// TestReadDirNamesMax: no more than limit names are returned, and more says
// whether the directory held others.
func TestReadDirNamesMax(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(f.root, "etc/d")
	must(t, os.Mkdir(dir, 0o755))
	r := f.open(t)
	if names, more, err := r.ReadDirNames("etc/d", 3); err != nil || len(names) != 0 || more {
		t.Fatalf("empty: %q %v %v", names, more, err)
	}
	for i := 0; i < 5; i++ {
		must(t, os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), nil, 0o644))
	}
	for limit, want := range map[int]bool{3: true, 4: true, 5: false, 6: false} {
		names, more, err := r.ReadDirNames("etc/d", limit)
		if err != nil || more != want || len(names) != min(limit, 5) {
			t.Errorf("limit %d: %q more %v %v", limit, names, more, err)
		}
	}
}
