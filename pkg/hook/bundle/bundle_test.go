package bundle

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// privileged is what runtimes generate for --privileged.
func privileged() *specs.Spec {
	return &specs.Spec{
		Root: &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
			Bounding: []string{"CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"},
		}},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}}},
	}
}

func writeBundle(t *testing.T, spec *specs.Spec) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func state(id, bundle string) *strings.Reader {
	b, _ := json.Marshal(specs.State{Version: specs.Version, ID: id, Status: specs.StateCreating, Pid: 1, Bundle: bundle})
	return strings.NewReader(string(b))
}

// load is what the hook does with its stdin.
func load(r *strings.Reader) (*Container, error) {
	st, err := ReadState(r)
	if err != nil {
		return nil, err
	}
	return Load(st)
}

func TestLoadRootPath(t *testing.T) {
	spec := privileged()
	dir := writeBundle(t, spec)
	c, err := load(state("c1", dir))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != "c1" || c.Rootfs != filepath.Join(dir, "rootfs") {
		t.Fatalf("relative root.path: got id %q rootfs %q", c.ID, c.Rootfs)
	}
	spec.Root.Path = "/var/lib/x/rootfs"
	c, err = load(state("c2", writeBundle(t, spec)))
	if err != nil || c.Rootfs != "/var/lib/x/rootfs" {
		t.Fatalf("absolute root.path: %v %v", c, err)
	}
}

func TestLoadErrors(t *testing.T) {
	noRoot := privileged()
	noRoot.Root = nil
	for name, in := range map[string]*strings.Reader{
		"garbage":        strings.NewReader("garbage"),
		"no bundle":      strings.NewReader(`{"ociVersion":"1.0.2","id":"x"}`),
		"missing bundle": state("x", filepath.Join(t.TempDir(), "gone")),
		"no root":        state("x", writeBundle(t, noRoot)),
	} {
		if _, err := load(in); err == nil {
			t.Errorf("%s: Load succeeded", name)
		}
	}
}

func TestPrivileged(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*specs.Spec)
		want   bool
	}{
		{"privileged", func(*specs.Spec) {}, true},
		{"no linux section", func(s *specs.Spec) { s.Linux = nil }, true},
		{"no CAP_SYS_ADMIN", func(s *specs.Spec) { s.Process.Capabilities.Bounding = []string{"CAP_NET_ADMIN"} }, false},
		{"CAP_SYS_ADMIN only effective", func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = nil
			s.Process.Capabilities.Effective = []string{"CAP_SYS_ADMIN"}
		}, false},
		{"no capabilities", func(s *specs.Spec) { s.Process.Capabilities = nil }, false},
		{"no process", func(s *specs.Spec) { s.Process = nil }, false},
		{"masked paths", func(s *specs.Spec) { s.Linux.MaskedPaths = []string{"/proc/kcore"} }, false},
		{"readonly paths", func(s *specs.Spec) { s.Linux.ReadonlyPaths = []string{"/proc/sys"} }, false},
	}
	for _, tt := range tests {
		s := privileged()
		tt.mutate(s)
		if got := (&Container{Spec: s}).Privileged(); got != tt.want {
			t.Errorf("%s: Privileged() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestOptedOut(t *testing.T) {
	s := privileged()
	c := &Container{Spec: s}
	if c.OptedOut() {
		t.Fatal("opted out without annotation")
	}
	s.Annotations = map[string]string{Annotation: "remove"}
	if c.OptedOut() {
		t.Fatal("only \"keep\" opts out")
	}
	s.Annotations[Annotation] = AnnotationKeep
	if !c.OptedOut() {
		t.Fatal("annotation keep ignored")
	}
}

// otherNetns returns the netns path of a child in a new network namespace.
func otherNetns(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start a child in a new netns (tests run as root): %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
}

func TestHostNetwork(t *testing.T) {
	tests := []struct {
		name string
		ns   []specs.LinuxNamespace
		want bool
	}{
		{"no network entry", []specs.LinuxNamespace{{Type: specs.PIDNamespace}}, true},
		{"new netns", []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}, false},
		{"own netns path", []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/proc/self/ns/net"}}, true},
		{"pod netns path", []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: otherNetns(t)}}, false},
		{"missing path", []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/var/run/netns/gone-" + t.Name()}}, false},
	}
	for _, tt := range tests {
		s := privileged()
		s.Linux.Namespaces = tt.ns
		if got := (&Container{Spec: s}).HostNetwork(); got != tt.want {
			t.Errorf("%s: HostNetwork() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestBindMountsOver(t *testing.T) {
	s := privileged()
	s.Mounts = []specs.Mount{
		{Destination: "/proc", Type: "proc"},
		{Destination: "/etc/hosts", Type: "bind", Options: []string{"rbind"}},
		{Destination: "/etc", Options: []string{"rbind", "ro"}},
		{Destination: "/etc/gssproxy", Type: "none", Options: []string{"bind"}},
		{Destination: "/etc/gssproxy/24-nfs-server.conf", Options: []string{"bind"}},
		{Destination: "/etc/gssproxy-old", Options: []string{"bind"}},
		{Destination: "/etc/gssproxy", Type: "tmpfs"},
	}
	got := (&Container{Spec: s}).BindMountsOver("/etc/gssproxy")
	want := []string{"/etc", "/etc/gssproxy", "/etc/gssproxy/24-nfs-server.conf"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestMountPoints(t *testing.T) {
	s := privileged()
	s.Mounts = []specs.Mount{
		{Destination: "/proc", Type: "proc"},
		{Destination: "srv//gss/", Type: "bind"},
		{Destination: "/etc/../srv/x", Type: "none", Options: []string{"ro", "rbind"}},
		{Destination: "/data", Type: "tmpfs", Options: []string{"binder"}},
	}
	got := (&Container{Spec: s}).MountPoints()
	want := []MountPoint{{"/proc", false}, {"/srv/gss", true}, {"/srv/x", true}, {"/data", false}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v want %+v", got, want)
	}
}

// TestSpecFileHostile: a config.json that is a FIFO (with or without a
// writer), a symlink, a directory or larger than MaxSpec is refused at once,
// never waited on or read whole.
func TestSpecFileHostile(t *testing.T) {
	genuine := writeBundle(t, privileged())
	tests := map[string]func(t *testing.T, p string){
		"fifo": func(t *testing.T, p string) { must(t, syscall.Mkfifo(p, 0o644)) },
		"fifo with a writer": func(t *testing.T, p string) {
			must(t, syscall.Mkfifo(p, 0o644))
			r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
			must(t, err)
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			must(t, err)
			t.Cleanup(func() { w.Close(); r.Close() })
		},
		"symlink":   func(t *testing.T, p string) { must(t, os.Symlink(filepath.Join(genuine, "config.json"), p)) },
		"directory": func(t *testing.T, p string) { must(t, os.Mkdir(p, 0o755)) },
		"too large": func(t *testing.T, p string) {
			must(t, os.WriteFile(p, []byte(`{"root":{"path":"rootfs"}}`), 0o644))
			must(t, os.Truncate(p, MaxSpec+1))
		},
	}
	for name, mk := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			mk(t, filepath.Join(dir, "config.json"))
			done := make(chan error, 1)
			go func() { _, err := load(state("c1", dir)); done <- err }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "bundle config") {
					t.Fatalf("err = %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Load blocked on config.json")
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
