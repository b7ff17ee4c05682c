package store

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The plugin runs once per CNI call: plain syscalls on small files keep
// os.File's poller registration off its path (a measurable share of a
// short-lived process's cost).

// maxStateFile caps a record or tombstone. A pod's record is 1 to 2 KiB
// (plus, in wrapper mode, the main plugin's config: a few KiB); one with 64
// interfaces and host links, 64 IPv6 addresses, 1024 rules and routes and a
// 64 KiB delegate config is about 400 KiB (TestStateFileCapLeavesRoom). A larger file
// was not written by leakguard: reading it would cost a CNI call its memory
// and the runtime's timeout, so it is moved aside unread.
const maxStateFile = 1 << 20

// badFile is a state file that must not be read, and why.
type badFile struct {
	kind   DiscardKind
	reason string
}

func (e *badFile) Error() string { return e.reason }

// readState reads a record or tombstone file. A file that must not be read
// yields a *badFile; a missing file an error satisfying
// errors.Is(err, os.ErrNotExist).
func readState(path string) ([]byte, error) {
	fd, err := openState(path, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if bad := notRegular(st.Mode); bad != nil {
		return nil, bad
	}
	if st.Size > maxStateFile {
		return nil, &badFile{TooLarge, fmt.Sprintf("%d bytes, over the %d-byte cap", st.Size, maxStateFile)}
	}
	// One byte more than the cap tells a file that grew since fstat.
	buf := make([]byte, 0, st.Size+1)
	for {
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if len(buf) > maxStateFile {
			return nil, &badFile{TooLarge, fmt.Sprintf("grew past the %d-byte cap while read", maxStateFile)}
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// writeTemp writes b to a temp file in the state dir and returns its path:
// with name, the temp file of that attachment's record (Save's caller holds
// its lock, so a file already there is a killed writer's leftover: removed
// first, see removeTemp); without, a new randomly named one, for writers
// that hold no lock (GC removes those a killed writer left once old).
func (s *Store) writeTemp(name string, b []byte, sync bool) (string, error) {
	if name != "" {
		path := s.tempPath(name)
		err := createFile(path, b, sync)
		if errors.Is(err, fs.ErrExist) {
			if _, err = s.removeTemp(name); err == nil {
				err = createFile(path, b, sync)
			}
		}
		return path, err
	}
	for i := 0; ; i++ {
		path := filepath.Join(s.dir, fmt.Sprintf("%s%016x", tmpPrefix, rand.Uint64()))
		if err := createFile(path, b, sync); !errors.Is(err, fs.ErrExist) || i == 99 {
			return path, err
		}
	}
}

// createFile writes b to a new 0600 file at path, fsynced when sync is set.
// On failure nothing is left at path.
func createFile(path string, b []byte, sync bool) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: path, Err: err}
	}
	fail := func(op string, err error) error {
		unix.Close(fd)
		unix.Unlink(path)
		return &os.PathError{Op: op, Path: path, Err: err}
	}
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fail("write", err)
		}
		b = b[n:]
	}
	if sync {
		if err := unix.Fsync(fd); err != nil {
			return fail("fsync", err)
		}
	}
	if err := unix.Close(fd); err != nil {
		unix.Unlink(path)
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

// stateOpenFlags open a state file without following a symlink, blocking on
// a FIFO or taking a terminal; the caller then fstats the fd and uses it only
// if it is a regular file (notRegular).
const stateOpenFlags = unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC

// openState opens a state file with stateOpenFlags. A symlink, a socket
// (which cannot be opened) or, for writing, a directory yields a *badFile.
func openState(path string, flags int) (int, error) {
	fd, err := unix.Open(path, flags|stateOpenFlags, 0o600)
	if err == unix.ELOOP || err == unix.ENXIO || err == unix.EISDIR {
		var st unix.Stat_t
		if unix.Lstat(path, &st) == nil {
			if bad := notRegular(st.Mode); bad != nil {
				return -1, bad
			}
		}
	}
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// notRegular refuses any file type but a regular file.
func notRegular(mode uint32) *badFile {
	if mode&unix.S_IFMT == unix.S_IFREG {
		return nil
	}
	return &badFile{NotRegular, "a " + typeName(mode) + ", not a regular file"}
}

// typeName names the file type of a stat mode, for messages.
func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("file of type %#o", mode&unix.S_IFMT)
}
