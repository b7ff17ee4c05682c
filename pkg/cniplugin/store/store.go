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
	tempExt    = ".new" // of a record's temp file (tempPath)
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
// left in place). For tools such as `leakguardctl scan`. The dir must pass
// the checks Open makes.
func OpenReadOnly(dir string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("state dir %q is not absolute", dir)
	}
	if err := checkDir("state dir", dir); err != nil {
		return nil, err
	}
	boot, err := CurrentBootID()
	if err != nil {
		return nil, err
	}
	return &Store{dir: dir, bootID: boot, readOnly: true}, nil
}

// Open creates dir (0700) if needed and returns a Store bound to the current
// boot. An existing dir must already be ours and private (see checkDir): it
// is never chmodded or chowned, so a mistyped stateDir such as /tmp or /run,
// or a dir another user prepared, is refused rather than taken over.
func Open(dir string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("state dir %q is not absolute", dir)
	}
	err := checkDir("state dir", dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
		err = checkDir("state dir", dir)
	}
	if err != nil {
		return nil, err
	}
	boot, err := CurrentBootID()
	if err != nil {
		return nil, err
	}
	return &Store{dir: dir, bootID: boot}, nil
}

// errNotOurs marks a directory refused by checkDir.
var errNotOurs = errors.New("not a private directory of leakguard's")

// checkDir refuses a directory someone else could fill or redirect: records
// there decide what DEL deletes, and a symlink would carry root's writes
// outside the state dir. It must be a real directory (not followed if a
// symlink), owned by the caller's uid, with no group or other access.
func checkDir(what, path string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Errorf("%s: %w", what, &os.PathError{Op: "lstat", Path: path, Err: err})
	}
	return checkDirStat(what, path, &st)
}

func checkDirStat(what, path string, st *unix.Stat_t) error {
	uid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%s %s is a %s, not a directory: %w", what, path, typeName(st.Mode), errNotOurs)
	case st.Uid != uid:
		return fmt.Errorf("%s %s is owned by uid %d, not by uid %d that runs leakguard: its files could be forged; use a dedicated directory: %w",
			what, path, st.Uid, uid, errNotOurs)
	case st.Mode&0o077 != 0:
		return fmt.Errorf("%s %s has mode %#o: it must be private to its owner (0700); use a dedicated directory: %w",
			what, path, st.Mode&0o7777, errNotOurs)
	}
	return nil
}

// makeTombDir creates the tombstone dir if missing and checks it as the
// state dir is checked.
func (s *Store) makeTombDir() error {
	dir := filepath.Join(s.dir, tombDir)
	if err := unix.Mkdir(dir, 0o700); err != nil && err != unix.EEXIST {
		return fmt.Errorf("create tombstone dir: %w", err)
	}
	return checkDir("tombstone dir", dir)
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
