// Package inroot is the one place where leakguard-hook touches files inside an
// untrusted container rootfs. Every path is resolved by the kernel relative to
// a directory fd of the rootfs (openat2 RESOLVE_IN_ROOT), so absolute and
// relative symlinks alike stay inside the rootfs; callers never join strings.
package inroot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrNotRegular is returned when a path resolves to something other than a
// regular file (directory, FIFO, socket, device node).
var ErrNotRegular = errors.New("not a regular file")

// ErrCrossesMount is returned when resolving a path would cross a mount point
// inside the rootfs that exists in the caller's mount namespace: the file may
// belong to the host, so it is never opened. Mounts a runtime makes in the
// container's own mount namespace are not visible to the caller and are not
// caught by this; see Root.Resolve.
var ErrCrossesMount = errors.New("path crosses a mount point")

// resolveFlags keeps every lookup inside the root, refuses /proc magic links
// and refuses to leave the rootfs mount (as the caller's namespace sees it).
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// Root is an open container rootfs.
type Root struct {
	dir  *os.File
	path string
}

// Open opens the rootfs directory at path (a host path).
func Open(path string) (*Root, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("failed to open rootfs %q: %w", path, err)
	}
	return &Root{dir: os.NewFile(uintptr(fd), path), path: path}, nil
}

// Close releases the rootfs fd.
func (r *Root) Close() error { return r.dir.Close() }

// Path is the host path the rootfs was opened at (for messages only).
func (r *Root) Path() string { return r.path }

// openat2 resolves name inside the root, retrying the EAGAIN the kernel
// returns when a rename or mount raced with an in-root lookup.
func (r *Root) openat2(name string, flags uint64) (*os.File, error) {
	how := unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolveFlags}
	var (
		fd  int
		err error
	)
	for i := 0; i < 16; i++ {
		fd, err = unix.Openat2(int(r.dir.Fd()), name, &how)
		if err != unix.EAGAIN && err != unix.EINTR {
			break
		}
	}
	if err != nil {
		if errors.Is(err, unix.EXDEV) {
			err = fmt.Errorf("%w: %w", ErrCrossesMount, err)
		}
		return nil, &os.PathError{Op: "openat2", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(r.path, name)), nil
}

// ReadDirNames lists up to limit names in directory name (resolved in the
// root), in the order the filesystem returns them, and says whether the
// directory holds more, which are not read.
func (r *Root) ReadDirNames(name string, limit int) ([]string, bool, error) {
	d, err := r.openat2(name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, false, err
	}
	defer d.Close()
	names, err := d.Readdirnames(limit + 1)
	if err != nil && err != io.EOF { // io.EOF: empty directory
		return nil, false, fmt.Errorf("failed to read directory %q in rootfs: %w", name, err)
	}
	if len(names) > limit {
		return names[:limit], true, nil
	}
	return names, false, nil
}
