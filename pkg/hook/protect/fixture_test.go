package protect

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/leakguard/leakguard/pkg/hook/hookpolicy"
)

const (
	on  = "[service/nfs-server]\n  mechs = krb5\n  kernel_nfsd = yes\n  euid = 0\n"
	off = "[service/nfs-server]\n  mechs = krb5\n  kernel_nfsd = no\n  euid = 0\n"
)

// container is a bundle with a config.json and a rootfs under rootfs/.
type container struct {
	bundle, rootfs string
	spec           *specs.Spec
}

// newContainer returns a privileged container in its own netns.
func newContainer(t *testing.T) *container {
	t.Helper()
	b := t.TempDir()
	c := &container{bundle: b, rootfs: filepath.Join(b, "rootfs"), spec: &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_SYS_ADMIN"}}},
		Linux:   &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}},
	}}
	if err := os.MkdirAll(filepath.Join(c.rootfs, "etc/gssproxy"), 0o755); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *container) write(t *testing.T, name, content string) {
	t.Helper()
	p := filepath.Join(c.rootfs, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (c *container) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.rootfs, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (c *container) run(t *testing.T, p hookpolicy.Policy) Result {
	t.Helper()
	b, err := json.Marshal(c.spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	st, _ := json.Marshal(specs.State{Version: specs.Version, ID: "ctr-" + t.Name(), Status: specs.StateCreating, Bundle: c.bundle})
	return Run(strings.NewReader(string(st)), p)
}

func enabled(content string) bool {
	return strings.Contains(strings.ToLower(content), "kernel_nfsd = yes")
}
