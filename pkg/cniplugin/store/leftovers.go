package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

// tempPath is where Save writes the named attachment's next record before
// renaming it into place. Writes of one record are serialized by its lock,
// so one fixed name per attachment suffices, and its DEL can find what a
// killed writer left without listing the dir. It does not end in recordExt:
// no glob for records matches it.
func (s *Store) tempPath(name string) string {
	return filepath.Join(s.dir, tmpPrefix+name+tempExt)
}

// RemoveTemp removes the temp file a killed writer of the attachment's
// record left, if any, and reports whether there was one. The caller must
// hold the attachment's lock. Only a regular file of ours is removed.
func (s *Store) RemoveTemp(k record.Key) (bool, error) {
	return s.removeTemp(baseName(k))
}

func (s *Store) removeTemp(name string) (bool, error) {
	path := s.tempPath(name)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err == unix.ENOENT {
		return false, nil
	} else if err != nil {
		return false, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if bad := notRegular(st.Mode); bad != nil {
		return false, fmt.Errorf("temp path %s is %s; left alone", path, bad.reason)
	}
	if uid := uint32(os.Geteuid()); st.Uid != uid {
		return false, fmt.Errorf("temp file %s is owned by uid %d, not %d; left alone", path, st.Uid, uid)
	}
	if err := unix.Unlink(path); err != nil && err != unix.ENOENT {
		return false, &os.PathError{Op: "remove", Path: path, Err: err}
	}
	return true, nil
}

// Leftovers counts what RemoveLeftovers removed.
type Leftovers struct {
	Locks, Temps int
}

// RemoveLeftovers removes what killed or finished invocations left in the
// state dir and nobody needs: lock files of attachments that neither a
// record nor one of tombstones names, and temp files of interrupted record
// writes, each while holding the attachment's lock (one someone holds, e.g.
// an ADD in flight, is skipped without waiting); other temp files (of
// tombstone rewrites, whose writers hold no lock) once older than age. A
// lock path that is not a regular file is removed: no one can hold it
// (Lock refuses it), and it would keep the attachment from being locked.
func (s *Store) RemoveLeftovers(tombstones []Entry, age time.Duration) (Leftovers, []error) {
	var done Leftovers
	if s.readOnly {
		return done, []error{errReadOnly}
	}
	ents, err := readDir("state dir", s.dir)
	if err != nil {
		return done, []error{err}
	}
	tombstoned := map[string]bool{}
	for _, t := range tombstones {
		tombstoned[baseName(t.Record.Key)] = true
	}
	var errs []error
	cutoff := time.Now().Add(-age)
	locked := map[string]bool{} // attachments to look at under their lock: has a lock file
	for _, e := range ents {
		n := e.Name()
		switch {
		case n == tmpPrefix+tempExt || n == lockExt:
			// No attachment has an empty name: not ours to judge.
		case strings.HasPrefix(n, tmpPrefix) && strings.HasSuffix(n, tempExt):
			name := strings.TrimSuffix(strings.TrimPrefix(n, tmpPrefix), tempExt)
			if _, ok := locked[name]; !ok {
				locked[name] = false
			}
		case strings.HasPrefix(n, tmpPrefix):
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && fi.ModTime().Before(cutoff) {
				if os.Remove(filepath.Join(s.dir, n)) == nil {
					done.Temps++
				}
			}
		case strings.HasSuffix(n, lockExt):
			name := strings.TrimSuffix(n, lockExt)
			switch {
			case !e.Type().IsRegular() && !e.IsDir():
				if err := unix.Unlink(filepath.Join(s.dir, n)); err == nil {
					done.Locks++
				}
			case !tombstoned[name] && !s.HasRecordNamed(name):
				locked[name] = true
			}
		}
	}
	names := make([]string, 0, len(locked))
	for n := range locked {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		l, err := s.LockName(name, 0)
		if errors.Is(err, ErrLockTimeout) {
			continue // in use: not a leftover
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if removed, err := s.removeTemp(name); err != nil {
			errs = append(errs, err)
		} else if removed {
			done.Temps++
		}
		// Judged again under the lock: an ADD may have saved meanwhile.
		forget := !tombstoned[name] && !s.HasRecordNamed(name)
		l.Release(forget)
		if forget && locked[name] {
			done.Locks++
		}
	}
	return done, errs
}
