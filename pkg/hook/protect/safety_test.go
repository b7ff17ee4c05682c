package protect

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// hostConfig writes a gssproxy config outside every rootfs that must never
// change, and returns its directory and its file.
func hostConfig(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "24-nfs-server.conf")
	if err := os.WriteFile(file, []byte(on), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

func untouched(t *testing.T, file string) {
	t.Helper()
	if b, err := os.ReadFile(file); err != nil || string(b) != on {
		t.Fatalf("host file %s changed: %q %v", file, b, err)
	}
}

func TestEscapingSymlinks(t *testing.T) {
	hostDir, hostFile := hostConfig(t)
	tests := map[string]func(c *container) (link, target string){
		"absolute file link": func(*container) (string, string) { return "etc/gssproxy/gssproxy.conf", hostFile },
		"relative file link": func(c *container) (string, string) {
			rel, _ := filepath.Rel(filepath.Join(c.rootfs, "etc/gssproxy"), hostFile)
			return "etc/gssproxy/24-nfs-server.conf", rel
		},
		"absolute dir link": func(*container) (string, string) { return "etc/gssproxy", hostDir },
		"relative dir link": func(*container) (string, string) {
			return "etc/gssproxy", strings.Repeat("../", 20) + hostDir[1:]
		},
	}
	for name, mk := range tests {
		t.Run(name, func(t *testing.T) {
			c := newContainer(t)
			link, target := mk(c)
			os.Remove(filepath.Join(c.rootfs, link))
			if err := os.Symlink(target, filepath.Join(c.rootfs, link)); err != nil {
				t.Fatal(err)
			}
			r := c.run(t, privileged)
			if r.Err != nil || r.Decision != Clean {
				t.Fatalf("got %+v; want clean (the link resolves to nothing inside the rootfs)", r)
			}
			untouched(t, hostFile)
		})
	}
}

func TestLegitInImageSymlinks(t *testing.T) {
	c := newContainer(t)
	c.write(t, "usr/share/gssproxy/nfs-server.conf", on)
	c.write(t, "opt/gp/gssproxy.conf", on)
	os.Symlink("/usr/share/gssproxy/nfs-server.conf", filepath.Join(c.rootfs, "etc/gssproxy/24-nfs-server.conf"))
	os.Symlink("../../opt/gp/gssproxy.conf", filepath.Join(c.rootfs, "etc/gssproxy/gssproxy.conf"))
	r := c.run(t, privileged)
	if r.Err != nil || r.Decision != Edited || len(r.Changed) != 2 {
		t.Fatalf("got %+v", r)
	}
	for _, p := range []string{"usr/share/gssproxy/nfs-server.conf", "opt/gp/gssproxy.conf"} {
		if enabled(c.read(t, p)) {
			t.Errorf("%s not edited through the in-image link", p)
		}
	}
	if fi, _ := os.Lstat(filepath.Join(c.rootfs, "etc/gssproxy/24-nfs-server.conf")); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("the link itself was replaced")
	}
}

func TestLegitInImageDirSymlink(t *testing.T) {
	c := newContainer(t)
	os.Remove(filepath.Join(c.rootfs, "etc/gssproxy"))
	c.write(t, "usr/etc/gssproxy/24-nfs-server.conf", on)
	os.Symlink("/usr/etc/gssproxy", filepath.Join(c.rootfs, "etc/gssproxy"))
	if r := c.run(t, privileged); r.Err != nil || r.Decision != Edited {
		t.Fatalf("got %+v", r)
	}
	if enabled(c.read(t, "usr/etc/gssproxy/24-nfs-server.conf")) {
		t.Fatal("not edited")
	}
}

func TestSpecialFiles(t *testing.T) {
	c := newContainer(t)
	dir := filepath.Join(c.rootfs, "etc/gssproxy")
	if err := unix.Mkfifo(filepath.Join(dir, "gssproxy.conf"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "24-nfs-server.conf"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	c.write(t, "etc/gssproxy/50-real.conf", on)
	done := make(chan Result)
	go func() { done <- c.run(t, privileged) }()
	select {
	case r := <-done:
		if r.Err != nil || r.Decision != Edited || len(r.Ignored) != 2 || len(r.Changed) != 1 {
			t.Fatalf("got %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("hook blocked on a FIFO or device")
	}
}

func TestKeepsOwnerModeInode(t *testing.T) {
	c := newContainer(t)
	c.write(t, "etc/gssproxy/24-nfs-server.conf", on)
	p := filepath.Join(c.rootfs, "etc/gssproxy/24-nfs-server.conf")
	os.Chown(p, 4321, 8765)
	os.Chmod(p, 0o640)
	var before, after unix.Stat_t
	unix.Stat(p, &before)
	if r := c.run(t, privileged); r.Decision != Edited {
		t.Fatalf("got %+v", r)
	}
	unix.Stat(p, &after)
	if after.Ino != before.Ino || after.Uid != 4321 || after.Gid != 8765 || after.Mode != before.Mode {
		t.Fatalf("stat before %+v after %+v", before, after)
	}
}

func TestBindMountedConfig(t *testing.T) {
	_, hostFile := hostConfig(t)
	for _, dest := range []string{"/etc", "/etc/gssproxy", "/etc/gssproxy/", "/etc/gssproxy/24-nfs-server.conf"} {
		t.Run(dest, func(t *testing.T) {
			c := newContainer(t)
			c.write(t, "etc/gssproxy/24-nfs-server.conf", on)
			c.spec.Mounts = []specs.Mount{{Destination: dest, Type: "bind", Source: hostFile, Options: []string{"rbind"}}}
			r := c.run(t, privileged)
			if r.Err != nil || r.Decision != Risk || len(r.Risks) != 1 {
				t.Fatalf("got %+v", r)
			}
			if !enabled(c.read(t, "etc/gssproxy/24-nfs-server.conf")) {
				t.Fatal("bind-mounted config edited")
			}
		})
	}
	t.Run("other files still edited", func(t *testing.T) {
		c := newContainer(t)
		c.write(t, "etc/gssproxy/24-nfs-server.conf", on)
		c.write(t, "etc/gssproxy/gssproxy.conf", on)
		c.spec.Mounts = []specs.Mount{{Destination: "/etc/gssproxy/24-nfs-server.conf", Source: hostFile, Options: []string{"bind"}}}
		r := c.run(t, privileged)
		if r.Decision != Risk || len(r.Changed) != 1 || enabled(c.read(t, "etc/gssproxy/gssproxy.conf")) {
			t.Fatalf("got %+v", r)
		}
	})
}

// TestHookNamespaceMountNotCrossed: a mount under the rootfs that exists in
// the hook's own (host) mount namespace, such as one an operator or another
// tool set up there before the hook ran, is never written through
// (RESOLVE_NO_XDEV). This is not how runtimes apply config.json mounts: they
// mount in the container's mount namespace, which the hook never sees; those
// are covered by resolving config.json mounts in the image
// (TestSymlinkIntoBindMount, test/hook TestRuncSymlinkIntoBindMount).
func TestHookNamespaceMountNotCrossed(t *testing.T) {
	_, hostFile := hostConfig(t)
	c := newContainer(t)
	target := filepath.Join(c.rootfs, "etc/gssproxy/24-nfs-server.conf")
	c.write(t, "etc/gssproxy/24-nfs-server.conf", "")
	if err := unix.Mount(hostFile, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	r := c.run(t, privileged)
	if r.Err != nil || r.Decision != Risk {
		t.Fatalf("got %+v", r)
	}
	untouched(t, hostFile)
}

func TestRelativeAndAbsoluteRootPath(t *testing.T) {
	c := newContainer(t)
	c.write(t, "etc/gssproxy/gssproxy.conf", on)
	c.spec.Root.Path = "./rootfs/../rootfs"
	if r := c.run(t, privileged); r.Decision != Edited {
		t.Fatalf("relative root.path: %+v", r)
	}
	c.write(t, "etc/gssproxy/gssproxy.conf", on)
	c.spec.Root.Path = c.rootfs
	if r := c.run(t, privileged); r.Decision != Edited {
		t.Fatalf("absolute root.path: %+v", r)
	}
}

func TestUnreadableRootIsAnError(t *testing.T) {
	c := newContainer(t)
	c.spec.Root.Path = "missing-rootfs"
	if r := c.run(t, privileged); r.Decision != Failed || r.Err == nil {
		t.Fatalf("got %+v", r)
	}
}
