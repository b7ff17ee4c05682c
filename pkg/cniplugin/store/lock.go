package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

// ErrLockTimeout means another invocation held the attachment's lock for the
// whole wait: a transient condition the runtime should retry (CNI code 11).
var ErrLockTimeout = errors.New("timed out waiting for the attachment lock")

// Lock is an exclusive lock on one attachment.
type Lock struct {
	fd   int
	path string
}

// Lock takes the attachment's lock, waiting at most timeout. Locks of
// different attachments are independent files, so pods never wait on each
// other.
func (s *Store) Lock(k record.Key, timeout time.Duration) (*Lock, error) {
	return s.lock(s.lockPath(k), timeout)
}

// LockName takes the lock of the attachment whose key has the given Name
// (record.Key.Name), for walkers that only know the name, e.g. of a pin.
// HasRecordNamed then tells whether that attachment has a live record.
func (s *Store) LockName(name string, timeout time.Duration) (*Lock, error) {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return nil, fmt.Errorf("invalid attachment name %q", name)
	}
	return s.lock(filepath.Join(s.dir, name+lockExt), timeout)
}

// HasRecordNamed reports whether a live record file exists for the name.
func (s *Store) HasRecordNamed(name string) bool {
	_, err := os.Lstat(filepath.Join(s.dir, name+recordExt))
	return err == nil
}

func (s *Store) lock(path string, timeout time.Duration) (*Lock, error) {
	deadline := time.Now().Add(timeout)
	for {
		fd, err := openLock(path)
		if err != nil {
			return nil, err
		}
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// The holder before us may have unlinked the file (Release with
			// remove); then our lock is on an orphan inode: start over.
			if sameFile(fd, path) {
				return &Lock{fd: fd, path: path}, nil
			}
			unix.Close(fd)
			continue
		}
		unix.Close(fd)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: %w", path, ErrLockTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openLock opens (creating it if missing) a lock file. Anything but a regular
// file there is refused, never waited on or followed: the verbs that need
// the lock then fail (DEL logs it and succeeds) instead of hanging.
func openLock(path string) (int, error) {
	fd, err := openState(path, unix.O_RDWR|unix.O_CREAT)
	var bad *badFile
	if errors.As(err, &bad) {
		return -1, fmt.Errorf("lock %s is %s; remove it", path, bad.reason)
	}
	if err != nil {
		return -1, fmt.Errorf("open lock: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("fstat lock %s: %w", path, err)
	}
	if bad := notRegular(st.Mode); bad != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("lock %s is %s; remove it", path, bad.reason)
	}
	return fd, nil
}

func sameFile(fd int, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(fd, &a) != nil || unix.Lstat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// Release unlocks. With remove, the lock file is unlinked first (while still
// held) so that finished attachments leave nothing behind.
func (l *Lock) Release(remove bool) {
	if remove {
		_ = unix.Unlink(l.path)
	}
	_ = unix.Close(l.fd)
}
