package store

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/record"
)

// ErrLockTimeout means another invocation held the attachment's lock for the
// whole wait: a transient condition the runtime should retry (CNI code 11).
var ErrLockTimeout = errors.New("timed out waiting for the attachment lock")

// Lock is an exclusive lock on one attachment.
type Lock struct {
	f    *os.File
	path string
}

// Lock takes the attachment's lock, waiting at most timeout. Locks of
// different attachments are independent files, so pods never wait on each
// other.
func (s *Store) Lock(k record.Key, timeout time.Duration) (*Lock, error) {
	path := s.lockPath(k)
	deadline := time.Now().Add(timeout)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open lock %s: %w", path, err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// The holder before us may have unlinked the file (Release with
			// remove); then our lock is on an orphan inode: start over.
			if sameFile(f, path) {
				return &Lock{f: f, path: path}, nil
			}
			f.Close()
			continue
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: %w", path, ErrLockTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// Release unlocks. With remove, the lock file is unlinked first (while still
// held) so that finished attachments leave nothing behind.
func (l *Lock) Release(remove bool) {
	if remove {
		_ = os.Remove(l.path)
	}
	_ = l.f.Close()
}
