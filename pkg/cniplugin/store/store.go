// Package store persists attachment records, one file per attachment, under
// a private directory: atomic writes, a lock per attachment, file names that
// cannot escape the directory, and records of other boots never returned.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

const (
	recordExt  = ".json"
	lockExt    = ".lock"
	tmpPrefix  = ".tmp-"
	corruptTag = ".corrupt-"
)

// Store is a directory of records. It holds no mutable state of its own.
type Store struct {
	dir      string
	bootID   string
	readOnly bool
}

// errReadOnly is returned by writes to a store opened with OpenReadOnly.
var errReadOnly = errors.New("state store opened read-only")

// OpenReadOnly opens an existing state dir for inspection only: nothing is
// created, written, moved aside or removed (unusable files are reported and
// left in place). For tools such as `leakguardctl scan`.
func OpenReadOnly(dir string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("state dir %q is not absolute", dir)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("stat state dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("state dir %s is not a directory", dir)
	}
	boot, err := CurrentBootID()
	if err != nil {
		return nil, err
	}
	return &Store{dir: dir, bootID: boot, readOnly: true}, nil
}

// Open creates dir (0700) if needed and returns a Store bound to the current
// boot. An existing dir must already be private (no group or other access):
// it is never chmodded, so a mistyped stateDir such as /tmp or /run is
// refused rather than locked down.
func Open(dir string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("state dir %q is not absolute", dir)
	}
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("stat state dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("state dir %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("state dir %s has mode %#o: it must be private to root (0700); use a dedicated directory", dir, fi.Mode().Perm())
	}
	boot, err := CurrentBootID()
	if err != nil {
		return nil, err
	}
	return &Store{dir: dir, bootID: boot}, nil
}

// ReadOnly returns a view of the store that reports unusable files instead
// of moving or removing them, for callers that read other attachments'
// records without holding their locks.
func (s *Store) ReadOnly() *Store {
	c := *s
	c.readOnly = true
	return &c
}

// onTmpfs tells whether fsync can be skipped: pointless on tmpfs (/run),
// costly on disks.
func (s *Store) onTmpfs() bool {
	var st unix.Statfs_t
	return unix.Statfs(s.dir, &st) == nil && st.Type == unix.TMPFS_MAGIC
}

// Dir returns the directory the store lives in.
func (s *Store) Dir() string { return s.dir }

// BootID returns the boot the store stamps records with.
func (s *Store) BootID() string { return s.bootID }

// baseName is the key's file name stem (see record.Key.Name).
func baseName(k record.Key) string { return k.Name() }

func (s *Store) recordPath(k record.Key) string { return filepath.Join(s.dir, baseName(k)+recordExt) }
func (s *Store) lockPath(k record.Key) string   { return filepath.Join(s.dir, baseName(k)+lockExt) }
