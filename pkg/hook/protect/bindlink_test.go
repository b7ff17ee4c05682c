package protect

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The hook runs in the host's mount namespace, where the container's bind
// mounts do not exist: it sees only the image. These tests declare bind
// mounts in config.json without mounting anything, which is exactly the
// hook's view under a real runtime (test/hook TestRuncSymlinkIntoBindMount
// checks the same with runc).

func bind(dest string) specs.Mount {
	return specs.Mount{Destination: dest, Type: "bind", Source: "/host/somewhere", Options: []string{"rbind", "ro"}}
}

func (c *container) symlink(t *testing.T, target, name string) {
	t.Helper()
	p := filepath.Join(c.rootfs, name)
	os.RemoveAll(p)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// TestSymlinkIntoBindMount: a config reached through an in-image symlink
// that leads into (or onto) a bind mount's destination is host content in the
// container: reported as a risk, the image's copy under the mount point left
// alone.
func TestSymlinkIntoBindMount(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, c *container)
		// image files that must stay on (never edited)
		kept []string
		// image files that must be edited (not under any bind mount)
		edited []string
		risks  int
	}{
		{"dir link absolute, bind on its target", func(t *testing.T, c *container) {
			c.write(t, "srv/gss/gssproxy.conf", on)
			c.symlink(t, "/srv/gss", "etc/gssproxy")
			c.spec.Mounts = []specs.Mount{bind("/srv/gss")}
		}, []string{"srv/gss/gssproxy.conf"}, nil, 1},
		{"dir link relative, bind on its target", func(t *testing.T, c *container) {
			c.write(t, "srv/gss/24-nfs-server.conf", on)
			c.symlink(t, "../srv/gss", "etc/gssproxy")
			c.spec.Mounts = []specs.Mount{bind("/srv/gss/")}
		}, []string{"srv/gss/24-nfs-server.conf"}, nil, 1},
		{"dir link, bind on a parent of its target", func(t *testing.T, c *container) {
			c.write(t, "srv/gss/gssproxy.conf", on)
			c.symlink(t, "/srv/gss", "etc/gssproxy")
			c.spec.Mounts = []specs.Mount{bind("/srv")}
		}, []string{"srv/gss/gssproxy.conf"}, nil, 1},
		{"dir link, bind target missing in the image", func(t *testing.T, c *container) {
			c.symlink(t, "/srv/gss", "etc/gssproxy")
			c.spec.Mounts = []specs.Mount{bind("/srv/gss")}
		}, nil, nil, 1},
		{"chain of links, bind on the last target", func(t *testing.T, c *container) {
			c.write(t, "data/gss/gssproxy.conf", on)
			c.symlink(t, "/opt/gss", "etc/gssproxy")
			c.symlink(t, "../data/./gss", "opt/gss")
			c.spec.Mounts = []specs.Mount{bind("/data")}
		}, []string{"data/gss/gssproxy.conf"}, nil, 1},
		{"file link into a bind mount, other file edited", func(t *testing.T, c *container) {
			c.write(t, "srv/gss/nfs.conf", on)
			c.write(t, "etc/gssproxy/gssproxy.conf", on)
			c.symlink(t, "/srv/gss/nfs.conf", "etc/gssproxy/24-nfs-server.conf")
			c.spec.Mounts = []specs.Mount{bind("/srv/gss")}
		}, []string{"srv/gss/nfs.conf"}, []string{"etc/gssproxy/gssproxy.conf"}, 1},
		{"bind destination is a link to the config dir", func(t *testing.T, c *container) {
			c.write(t, "etc/gssproxy/gssproxy.conf", on)
			c.symlink(t, "/etc/gssproxy", "cfg")
			c.spec.Mounts = []specs.Mount{bind("/cfg")}
		}, []string{"etc/gssproxy/gssproxy.conf"}, nil, 1},
		{"bind destination through a dir link onto a file", func(t *testing.T, c *container) {
			c.write(t, "etc/gssproxy/gssproxy.conf", on)
			c.write(t, "etc/gssproxy/24-nfs-server.conf", on)
			c.symlink(t, "../etc/gssproxy", "opt/link")
			c.spec.Mounts = []specs.Mount{bind("/opt/link/24-nfs-server.conf")}
		}, []string{"etc/gssproxy/24-nfs-server.conf"}, []string{"etc/gssproxy/gssproxy.conf"}, 1},
		{"bind onto a drop-in the image lacks, through a link", func(t *testing.T, c *container) {
			c.write(t, "etc/gssproxy/gssproxy.conf", on)
			c.symlink(t, "/etc/gssproxy", "opt/link")
			c.spec.Mounts = []specs.Mount{bind("/opt/link/24-nfs-server.conf")}
		}, nil, []string{"etc/gssproxy/gssproxy.conf"}, 1},
		{"bind into a linked config dir, below a file name gssproxy reads", func(t *testing.T, c *container) {
			c.write(t, "usr/gss/gssproxy.conf", on)
			c.symlink(t, "/usr/gss", "etc/gssproxy")
			c.spec.Mounts = []specs.Mount{bind("/usr/gss/gssproxy.conf/x")}
		}, []string{"usr/gss/gssproxy.conf"}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newContainer(t)
			tt.setup(t, c)
			r := c.run(t, privileged)
			if r.Err != nil || r.Decision != Risk || len(r.Risks) != tt.risks || len(r.Changed) != len(tt.edited) {
				t.Fatalf("got %+v", r)
			}
			for _, f := range tt.kept {
				if !enabled(c.read(t, f)) {
					t.Errorf("%s is under a bind mount in the container but was edited in the image", f)
				}
			}
			for _, f := range tt.edited {
				if enabled(c.read(t, f)) {
					t.Errorf("%s is not under any bind mount but was not edited", f)
				}
			}
			t.Logf("risks: %q", r.Risks)
		})
	}
}

// TestBindMountsElsewhereStillEdited: bind mounts that do not reach the
// config (the usual /etc/hosts and friends, a link whose target is not
// mounted) leave the config edited, as before.
func TestBindMountsElsewhereStillEdited(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, c *container)
		file  string
	}{
		{"kubelet-style file mounts", func(t *testing.T, c *container) {
			c.write(t, "etc/gssproxy/gssproxy.conf", on)
			c.spec.Mounts = []specs.Mount{{Destination: "/proc", Type: "proc"}, {Destination: "/dev", Type: "tmpfs"},
				bind("/etc/hosts"), bind("/etc/hostname"), bind("/etc/resolv.conf"), bind("/dev/termination-log"),
				bind("/var/run/secrets/kubernetes.io/serviceaccount"), bind("/etc/gssproxy-old")}
		}, "etc/gssproxy/gssproxy.conf"},
		{"dir link, bind next to its target", func(t *testing.T, c *container) {
			c.write(t, "srv/gss/gssproxy.conf", on)
			c.symlink(t, "/srv/gss", "etc/gssproxy")
			c.spec.Mounts = []specs.Mount{bind("/srv/gss-other"), bind("/srv/gs")}
		}, "srv/gss/gssproxy.conf"},
		{"bind destination link leads elsewhere", func(t *testing.T, c *container) {
			c.write(t, "etc/gssproxy/gssproxy.conf", on)
			c.symlink(t, "/var/data", "etc/gssproxy-data")
			c.spec.Mounts = []specs.Mount{bind("/etc/gssproxy-data")}
		}, "etc/gssproxy/gssproxy.conf"},
		{"image link below an earlier mount is not what the runtime sees", func(t *testing.T, c *container) {
			// In the container /run is a fresh tmpfs: the image's /run/x link
			// is hidden, so the bind lands on /run/x, not on /etc/gssproxy.
			c.write(t, "etc/gssproxy/gssproxy.conf", on)
			c.symlink(t, "/etc/gssproxy", "run/x")
			c.spec.Mounts = []specs.Mount{{Destination: "/run", Type: "tmpfs"}, bind("/run/x")}
		}, "etc/gssproxy/gssproxy.conf"},
		{"bind inside the config dir, not a name gssproxy reads", func(t *testing.T, c *container) {
			c.write(t, "etc/gssproxy/gssproxy.conf", on)
			c.spec.Mounts = []specs.Mount{bind("/etc/gssproxy/nfs-server.conf"), bind("/etc/gssproxy/keytabs/x")}
		}, "etc/gssproxy/gssproxy.conf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newContainer(t)
			tt.setup(t, c)
			r := c.run(t, privileged)
			if r.Err != nil || r.Decision != Edited || len(r.Risks) != 0 || len(r.Changed) != 1 {
				t.Fatalf("got %+v", r)
			}
			if enabled(c.read(t, tt.file)) {
				t.Fatalf("%s not edited", tt.file)
			}
		})
	}
}

// TestBindDestinationLoop: a bind destination the hook cannot resolve (a
// symlink loop) leaves the config alone as a risk rather than guessing.
func TestBindDestinationLoop(t *testing.T) {
	c := newContainer(t)
	c.write(t, "etc/gssproxy/gssproxy.conf", on)
	c.symlink(t, "/b", "a")
	c.symlink(t, "/a", "b")
	c.spec.Mounts = []specs.Mount{bind("/a/x")}
	r := c.run(t, privileged)
	if r.Err != nil || r.Decision != Risk || len(r.Risks) != 1 || !strings.Contains(r.Risks[0], "/a/x") {
		t.Fatalf("got %+v", r)
	}
	if !enabled(c.read(t, "etc/gssproxy/gssproxy.conf")) {
		t.Fatal("edited although a bind mount could land on it")
	}
}
