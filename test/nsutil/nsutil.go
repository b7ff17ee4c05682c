// Package nsutil holds test-only helpers for throw-away network namespaces and
// for simulating the auth_rpcgss leak: a netns whose path is gone while the
// namespace itself stays alive through a reference that is not a path.
package nsutil

import (
	"fmt"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"golang.org/x/sys/unix"
)

// NewNS creates a bind-mounted throw-away netns that is unmounted and closed
// when the test ends (whether or not it was leaked in between).
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		_ = RemovePath(n.Path())
	})
	return n
}

// LeakBySocket reproduces the kernel leak from userspace: it creates a socket
// inside n (which pins the netns like the RPC client of auth_rpcgss does),
// then unmounts and removes n's path and closes n's fd. Afterwards the netns
// is reachable by no path, no process and no nsfs fd, yet it is alive with all
// its interfaces. The returned func frees it (closes the socket).
func LeakBySocket(t testing.TB, n ns.NetNS) func() {
	t.Helper()
	fd := -1
	err := n.Do(func(ns.NetNS) error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatalf("create pinning socket in %s: %v", n.Path(), err)
	}
	_ = n.Close()
	if err := RemovePath(n.Path()); err != nil {
		unix.Close(fd)
		t.Fatalf("remove netns path: %v", err)
	}
	closed := false
	release := func() {
		if !closed {
			closed = true
			unix.Close(fd)
		}
	}
	t.Cleanup(release)
	return release
}

// LeakByFD removes n's path but keeps n's open nsfs fd as the only reference.
func LeakByFD(t testing.TB, n ns.NetNS) {
	t.Helper()
	if err := RemovePath(n.Path()); err != nil {
		t.Fatalf("remove netns path: %v", err)
	}
}

// RemovePath does what a runtime does when it tears a sandbox down: it
// unmounts the netns bind mount (lazily, so open fds keep working) and
// removes the file. The namespace itself lives on while referenced.
func RemovePath(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// PathOf returns the /proc path of the netns of a thread: used to hand the
// plugin a CNI_NETNS that points at a namespace it must not touch.
func PathOf(pid, tid int) string {
	return fmt.Sprintf("/proc/%d/task/%d/ns/net", pid, tid)
}
