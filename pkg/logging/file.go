package logging

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Reasons OpenFile refuses a log path.
var (
	// ErrNotRegular: a symlink, FIFO, socket, device or directory. Appending
	// through a symlink writes wherever it points; opening a FIFO blocks
	// until a reader comes, which would hang DEL before it takes its lock.
	ErrNotRegular = errors.New("not a regular file")
	// ErrHardLinked: the file has another name, which may be any file of
	// the same filesystem (appending would write into it).
	ErrHardLinked = errors.New("file has more than one hard link")
	// ErrNotOwned: the file, or its directory, belongs to another user, who
	// could swap it for something else between runs.
	ErrNotOwned = errors.New("owned by another user")
	// ErrOpenDir: the directory is writable by others without the sticky
	// bit, so anyone could replace the file.
	ErrOpenDir = errors.New("directory writable by others (and not sticky)")
)

// OpenFile opens path for appending log lines, creating it with perm if it
// does not exist, and returns it only if it is a regular file with one
// link, owned by the caller, in a directory owned by the caller or root that
// others cannot write to (unless sticky, like /tmp). Nothing it opens can
// block: the name is looked at with O_PATH and O_NOFOLLOW first (no device
// driver's open, no FIFO wait), and only a regular file is then reopened
// for writing, through /proc/self/fd, so the inode checked is the inode
// written. Symlinks in the directory part are followed: the operator chose
// that path.
func OpenFile(path string, perm os.FileMode) (*os.File, error) {
	dir, name := filepath.Split(path)
	if name == "" || name == "." || name == ".." {
		return nil, fmt.Errorf("log file %q: no file name", path)
	}
	if dir == "" {
		dir = "."
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("log directory %q: %w", dir, err)
	}
	defer unix.Close(dfd)
	if err := checkDir(dfd); err != nil {
		return nil, fmt.Errorf("log directory %q: %w", dir, err)
	}
	f, err := openIn(dfd, name, perm)
	if errors.Is(err, unix.EEXIST) { // created by someone else since we looked
		f, err = openIn(dfd, name, perm)
	}
	if err != nil {
		return nil, fmt.Errorf("log file %q: %w", path, err)
	}
	return f, nil
}

func checkDir(dfd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return err
	}
	if st.Uid != uint32(os.Geteuid()) && st.Uid != 0 {
		return fmt.Errorf("%w (uid %d)", ErrNotOwned, st.Uid)
	}
	if st.Mode&unix.S_IWOTH != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("%w (mode %#o)", ErrOpenDir, st.Mode&0o7777)
	}
	return nil
}

// openIn opens name in the directory dfd for appending; see OpenFile.
func openIn(dfd int, name string, perm os.FileMode) (*os.File, error) {
	const flags = unix.O_WRONLY | unix.O_APPEND | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	pfd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	var fd int
	switch {
	case errors.Is(err, unix.ENOENT):
		// O_EXCL: a file that appeared since is looked at again, not opened blindly.
		fd, err = unix.Openat(dfd, name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, uint32(perm.Perm()))
		if err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		err = checkFile(pfd)
		if err == nil { // the magic link itself is followed: no O_NOFOLLOW
			fd, err = unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), flags, 0)
		}
		unix.Close(pfd)
		if err != nil {
			return nil, err
		}
	}
	if err := checkFile(fd); err != nil { // what was opened, in case the name moved
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

func checkFile(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("%w: a symlink", ErrNotRegular)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%w (mode %#o)", ErrNotRegular, st.Mode&unix.S_IFMT)
	case st.Nlink > 1:
		return fmt.Errorf("%w (%d links)", ErrHardLinked, st.Nlink)
	case st.Uid != uint32(os.Geteuid()):
		return fmt.Errorf("%w (uid %d)", ErrNotOwned, st.Uid)
	}
	return nil
}
