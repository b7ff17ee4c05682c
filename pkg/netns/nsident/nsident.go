// Package nsident identifies network namespaces by their nsfs object
// (device + inode) and classifies a CNI_NETNS path against a recorded
// identity. Paths are never trusted on their own: a path may be missing, a
// leftover regular file, or a reused /proc/<pid>/ns/net of another netns.
package nsident

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Identity is the kernel identity of a namespace: the device and inode of its
// nsfs object. It is only meaningful within one boot.
type Identity struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

func (id Identity) String() string { return fmt.Sprintf("%d:%d", id.Dev, id.Ino) }

// IsZero reports whether id was never set.
func (id Identity) IsZero() bool { return id.Dev == 0 && id.Ino == 0 }

// ErrNotNetns is returned when a path exists but is not an nsfs object.
var ErrNotNetns = errors.New("not a network namespace")

// OfPath returns the identity of the netns at path without entering it.
// A missing path yields an error satisfying errors.Is(err, os.ErrNotExist).
func OfPath(path string) (Identity, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Identity{}, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	if st.Type != unix.NSFS_MAGIC {
		return Identity{}, fmt.Errorf("%s: %w", path, ErrNotNetns)
	}
	var s unix.Stat_t
	if err := unix.Stat(path, &s); err != nil {
		return Identity{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return Identity{Dev: s.Dev, Ino: s.Ino}, nil
}

// OfFd returns the identity of the namespace behind an open nsfs fd.
func OfFd(fd uintptr) (Identity, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(fd), &st); err != nil {
		return Identity{}, fmt.Errorf("fstatfs fd %d: %w", fd, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return Identity{}, fmt.Errorf("fd %d: %w", fd, ErrNotNetns)
	}
	var s unix.Stat_t
	if err := unix.Fstat(int(fd), &s); err != nil {
		return Identity{}, fmt.Errorf("fstat fd %d: %w", fd, err)
	}
	return Identity{Dev: s.Dev, Ino: s.Ino}, nil
}

// Current returns the identity of the calling thread's netns: the "host"
// from the plugin's point of view.
func Current() (Identity, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return OfPath(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
}
