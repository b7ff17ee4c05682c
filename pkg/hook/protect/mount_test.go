package protect

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOverlayRootfs: the rootfs is an overlay like containerd's and CRI-O's.
// The edited file is copied up, the image layer stays as it was, and a file
// with nothing to change is not copied up.
func TestOverlayRootfs(t *testing.T) {
	c := newContainer(t)
	base := t.TempDir()
	// Layers on a tmpfs: overlayfs refuses an upper dir on overlayfs (CI in a container).
	if err := unix.Mount("tmpfs", base, "tmpfs", 0, ""); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(base, unix.MNT_DETACH) })
	lower, upper, work := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, d := range []string{lower + "/etc/gssproxy", upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(lower, "etc/gssproxy/24-nfs-server.conf"), []byte(on), 0o644)
	os.WriteFile(filepath.Join(lower, "etc/gssproxy/gssproxy.conf"), []byte(off), 0o644)
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", c.rootfs, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(c.rootfs, unix.MNT_DETACH) })

	r := c.run(t, privileged)
	if r.Err != nil || r.Decision != Edited || len(r.Changed) != 1 {
		t.Fatalf("got %+v", r)
	}
	if enabled(c.read(t, "etc/gssproxy/24-nfs-server.conf")) {
		t.Fatal("merged view still on")
	}
	if b, _ := os.ReadFile(filepath.Join(lower, "etc/gssproxy/24-nfs-server.conf")); string(b) != on {
		t.Fatal("image layer changed")
	}
	if _, err := os.Stat(filepath.Join(upper, "etc/gssproxy/gssproxy.conf")); err == nil {
		t.Fatal("unchanged gssproxy.conf was copied up")
	}
}

// TestReadOnlyRootfs: files with nothing to change are only read, so a
// read-only rootfs is fine; one that needs an edit is an error.
func TestReadOnlyRootfs(t *testing.T) {
	c := newContainer(t)
	c.write(t, "etc/gssproxy/gssproxy.conf", off)
	if err := unix.Mount(c.rootfs, c.rootfs, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(c.rootfs, unix.MNT_DETACH) })
	if err := unix.Mount("", c.rootfs, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	if r := c.run(t, privileged); r.Err != nil || r.Decision != Clean {
		t.Fatalf("nothing to change on a read-only rootfs: %+v", r)
	}
	if err := unix.Mount("", c.rootfs, "", unix.MS_BIND|unix.MS_REMOUNT, ""); err != nil {
		t.Fatal(err)
	}
	c.write(t, "etc/gssproxy/24-nfs-server.conf", on)
	if err := unix.Mount("", c.rootfs, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	if r := c.run(t, privileged); r.Decision != Failed || r.Err == nil {
		t.Fatalf("edit needed on a read-only rootfs: %+v", r)
	}
}
