package nspin_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/netns/nsident"
	"github.com/leakguard/leakguard/pkg/netns/nspin"
	"github.com/leakguard/leakguard/test/nsutil"
)

// newPinDir returns a pin dir path under a temp dir, unmounted (with every
// pin below it) before the temp dir is removed.
func newPinDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "netns")
	t.Cleanup(func() { unmountAll(dir) })
	return dir
}

// unmountAll lazily unmounts every mount stacked at path.
func unmountAll(path string) {
	for range 16 {
		if unix.Unmount(path, unix.MNT_DETACH) != nil {
			return
		}
	}
}

// mounts returns the optional fields of every mount at path, from
// /proc/self/mountinfo (one entry per mount stacked there).
func mounts(t *testing.T, path string) [][]string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 || f[4] != path {
			continue
		}
		var opt []string
		for _, o := range f[6:] {
			if o == "-" {
				break
			}
			opt = append(opt, o)
		}
		out = append(out, opt)
	}
	return out
}

func identity(t *testing.T, path string) nsident.Identity {
	t.Helper()
	id, err := nsident.OfPath(path)
	if err != nil {
		t.Fatalf("identity of %s: %v", path, err)
	}
	return id
}

func TestPinKeepsLeakedNetnsReachable(t *testing.T) {
	pod := nsutil.NewNS(t)
	want := identity(t, pod.Path())
	// A marker link proves later that the pin is this live netns.
	if err := pod.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: "marker0"}})
	}); err != nil {
		t.Fatalf("create marker link: %v", err)
	}
	dir := newPinDir(t)
	name := "net_c1_eth0"

	pin, err := nspin.New(pod.Path(), dir, name)
	if err != nil {
		t.Fatalf("Pin: %v", err)
	}
	if pin.Path != filepath.Join(dir, name) || pin.Netns != want {
		t.Fatalf("Pin = %+v; want path %s, netns %v", pin, filepath.Join(dir, name), want)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("pin dir mode: %v, %v; want 0700", fi, err)
	}
	dm := mounts(t, dir)
	if len(dm) != 1 || !strings.HasPrefix(strings.Join(dm[0], " "), "shared:") {
		t.Fatalf("pin dir mounts %v; want one shared mount point", dm)
	}

	// The runtime tears the sandbox down: only the pin keeps the netns.
	_ = pod.Close()
	if err := nsutil.RemovePath(pod.Path()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(pod.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("original netns path still there: %v", err)
	}

	n, err := nspin.Open(pin)
	if err != nil {
		t.Fatalf("Open through pin: %v", err)
	}
	defer n.Close()
	if got, err := nsident.OfFd(n.Fd()); err != nil || got != want {
		t.Fatalf("opened netns %v, %v; want %v", got, err, want)
	}
	err = n.Do(func(ns.NetNS) error {
		inside, err := nsident.Current()
		if err != nil {
			return err
		}
		if inside != want {
			t.Errorf("inside the pin: netns %v, want %v", inside, want)
		}
		_, err = netlinksafe.LinkByName("marker0")
		return err
	})
	if err != nil {
		t.Fatalf("enter pinned netns: %v", err)
	}

	// Pinning again (here from the pin itself) is a no-op: no stacked mount.
	again, err := nspin.New(pin.Path, dir, name)
	if err != nil || again != pin {
		t.Fatalf("re-Pin = %+v, %v; want %+v", again, err, pin)
	}
	if m := mounts(t, pin.Path); len(m) != 1 {
		t.Fatalf("%d mounts at %s after re-pin, want 1", len(m), pin.Path)
	}
	if m := mounts(t, dir); len(m) != 1 {
		t.Fatalf("%d mounts at pin dir after re-pin, want 1", len(m))
	}

	if err := nspin.Remove(pin); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Lstat(pin.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin file after Remove: %v", err)
	}
	if m := mounts(t, pin.Path); len(m) != 0 {
		t.Fatalf("pin still mounted after Remove: %v", m)
	}
	if err := nspin.Remove(pin); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := nspin.Open(pin); !errors.Is(err, nspin.ErrGone) {
		t.Fatalf("Open after Remove = %v; want ErrGone", err)
	}
}

func TestReplacedPinIsNotTrusted(t *testing.T) {
	a := nsutil.NewNS(t)
	b := nsutil.NewNS(t)
	idA, idB := identity(t, a.Path()), identity(t, b.Path())
	dir := newPinDir(t)
	pin, err := nspin.New(a.Path(), dir, "p1")
	if err != nil {
		t.Fatalf("Pin: %v", err)
	}

	// Someone mounts another netns at the pin path.
	if err := unix.Unmount(pin.Path, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(b.Path(), pin.Path, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}

	_, err = nspin.Open(pin)
	var re *nspin.ReplacedError
	if !errors.As(err, &re) || re.Found != idB || re.Recorded != idA {
		t.Fatalf("Open of replaced pin = %v; want ReplacedError found %v recorded %v", err, idB, idA)
	}
	err = nspin.Remove(pin)
	if !errors.As(err, &re) {
		t.Fatalf("Remove of replaced pin = %v; want ReplacedError", err)
	}
	if got := identity(t, pin.Path); got != idB {
		t.Fatalf("Remove touched the foreign netns mount: %v at the path, want %v", got, idB)
	}

	// Pinning the attachment again supersedes what is there.
	again, err := nspin.New(a.Path(), dir, "p1")
	if err != nil || again != pin {
		t.Fatalf("re-Pin over another netns = %+v, %v; want %+v", again, err, pin)
	}
	if got := identity(t, pin.Path); got != idA {
		t.Fatalf("after re-Pin the path holds %v, want %v", got, idA)
	}
	if m := mounts(t, pin.Path); len(m) != 1 {
		t.Fatalf("%d mounts at %s after re-pin, want 1", len(m), pin.Path)
	}
	if err := nspin.Remove(pin); err != nil {
		t.Fatalf("Remove: %v", err)
	}
}

func TestPinRefuses(t *testing.T) {
	pod := nsutil.NewNS(t)
	dir := newPinDir(t)

	for _, name := range []string{"", ".", "..", "a/b", "../x", ".hidden", "a b", "a\x00b", strings.Repeat("a", 256)} {
		if _, err := nspin.New(pod.Path(), dir, name); err == nil {
			t.Errorf("Pin with name %q succeeded", name)
		}
	}
	if _, err := nspin.New(pod.Path(), "relative/dir", "x"); err == nil {
		t.Errorf("Pin into a relative dir succeeded")
	}

	leftover := filepath.Join(t.TempDir(), "leftover")
	if err := os.WriteFile(leftover, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := nspin.New(leftover, dir, "x"); !errors.Is(err, nsident.ErrNotNetns) {
		t.Errorf("Pin of a regular file = %v; want ErrNotNetns", err)
	}
	if _, err := nspin.New("/proc/self/ns/net", dir, "x"); !errors.Is(err, nspin.ErrHostNetns) {
		t.Errorf("Pin of the host netns = %v; want ErrHostNetns", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused pins left a file behind: %v", err)
	}

	// A pin dir owned by another uid would be refused by Remove, DEL and GC:
	// New refuses it too, so no pin is ever made that cannot be removed.
	foreign := filepath.Join(t.TempDir(), "foreign")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(foreign, 4321, 4321); err != nil {
		t.Fatal(err)
	}
	if _, err := nspin.New(pod.Path(), foreign, "x"); err == nil || !strings.Contains(err.Error(), "owned by uid 4321") {
		t.Errorf("Pin into a dir owned by another uid = %v; want refused naming the owner", err)
	}
	if _, err := os.Lstat(filepath.Join(foreign, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused pin dir got a pin file: %v", err)
	}
	if fi, err := os.Lstat(foreign); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("refused pin dir changed: %v, %v", fi, err)
	}

	// Something that is not a pin at the pin path is left alone.
	if _, err := nspin.New(pod.Path(), dir, "ok"); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "adir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := nspin.New(pod.Path(), dir, "adir"); err == nil {
		t.Errorf("Pin onto a directory succeeded")
	}
	if fi, err := os.Lstat(sub); err != nil || !fi.IsDir() {
		t.Errorf("directory at pin path was changed: %v, %v", fi, err)
	}
}

func TestRemoveTouchesOnlyPins(t *testing.T) {
	pod := nsutil.NewNS(t)
	id := identity(t, pod.Path())

	// The runtime's own netns mount (not in a pin dir) is never unmounted.
	if err := nspin.Remove(nspin.Pin{Path: pod.Path(), Netns: id}); err == nil {
		t.Errorf("Remove of the runtime's netns mount succeeded")
	}
	if got := identity(t, pod.Path()); got != id {
		t.Fatalf("runtime netns mount changed: %v", got)
	}

	// Nor one in a directory Pin did not set up (not a mount point).
	plain := t.TempDir()
	if err := os.Chmod(plain, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(plain, "p")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(pod.Path(), path, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(path) })
	err := nspin.Remove(nspin.Pin{Path: path, Netns: id})
	if err == nil || !strings.Contains(err.Error(), "not a mount point") {
		t.Errorf("Remove in a plain dir = %v; want a refusal", err)
	}
	if got := identity(t, path); got != id {
		t.Fatalf("netns mount in a plain dir changed: %v", got)
	}

	for _, p := range []nspin.Pin{
		{Path: "relative/p", Netns: id},
		{Path: "/run/leakguard/netns/../x", Netns: id},
		{Path: filepath.Join(newPinDir(t), "p")},
	} {
		if err := nspin.Remove(p); err == nil {
			t.Errorf("Remove(%+v) succeeded", p)
		}
	}
	if err := nspin.Remove(nspin.Pin{Path: filepath.Join(t.TempDir(), "gone", "p"), Netns: id}); err != nil {
		t.Errorf("Remove in a missing dir = %v; want nil", err)
	}
}
