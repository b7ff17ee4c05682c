package guard_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

func (f *fixture) status(stateDir string) error {
	a := &skel.CmdArgs{StdinData: f.conf("1.1.0", nil, map[string]any{"stateDir": stateDir})}
	return f.plugin.Status(a)
}

func TestStatus(t *testing.T) {
	f := newFixture(t)
	if err := f.status(f.stateDir); err != nil {
		t.Fatalf("STATUS on a usable state dir: %v", err)
	}

	ro := t.TempDir()
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(ro, unix.MNT_DETACH) })
	assertCNIError(t, f.status(filepath.Join(ro, "state")), types.ErrPluginNotAvailable, "state dir")
	// An existing but read-only state dir.
	assertCNIError(t, f.status(ro), types.ErrPluginNotAvailable, "state dir")

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	assertCNIError(t, f.status(file), types.ErrPluginNotAvailable, "not a directory")
}
