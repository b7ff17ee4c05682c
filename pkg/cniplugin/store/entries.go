package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

const (
	tombDir        = "tombstones"
	tombExt        = ".tomb"
	tombTimeDigits = 20 // UnixNano, zero-padded
)

// Entry is one record or tombstone file with its decoded content.
type Entry struct {
	Path   string
	Record *record.Record
}

// Entries loads every record and tombstone of the current boot. Unusable
// files are discarded as Load discards them, each reported in problems as a
// *DiscardedError; walking goes on.
func (s *Store) Entries() ([]Entry, []Entry, []error) {
	records, problems := s.loadAll(s.dir, false)
	tombstones, p := s.loadAll(filepath.Join(s.dir, tombDir), true)
	return records, tombstones, append(problems, p...)
}

// SweepWindow serves DEL's bounded tombstone sweep with one directory read:
// when more than above tombstones exist, it loads at most most of them in
// age order from the one start picks (wrapping around), so that the window
// moves from call to call and tombstones whose links live on cannot shield
// the others. Otherwise it loads nothing.
func (s *Store) SweepWindow(above, most int, start func(n int) int) ([]Entry, []error) {
	dir := filepath.Join(s.dir, tombDir)
	ents, err := list("tombstone dir", dir, tombExt)
	if err != nil {
		return nil, []error{err}
	}
	if len(ents) <= above {
		return nil, nil
	}
	var out []Entry
	var problems []error
	first := start(len(ents))
	for i := 0; i < len(ents) && len(out)+len(problems) < most; i++ {
		switch e, err := s.loadEntry(dir, ents[(first+i)%len(ents)], true); {
		case err != nil:
			problems = append(problems, err)
		case e != nil:
			out = append(out, *e)
		}
	}
	return out, problems
}

func (s *Store) loadAll(dir string, tomb bool) ([]Entry, []error) {
	what, ext := "state dir", recordExt
	if tomb {
		what, ext = "tombstone dir", tombExt
	}
	ents, err := list(what, dir, ext)
	if err != nil {
		return nil, []error{err}
	}
	var out []Entry
	var problems []error
	for _, de := range ents {
		switch e, err := s.loadEntry(dir, de, tomb); {
		case err != nil:
			problems = append(problems, err)
		case e != nil:
			out = append(out, *e)
		}
	}
	return out, problems
}

// list is the one directory walk: the entries of dir whose name ends in ext,
// temp files excluded, sorted by name (for tombstones, age order). A
// missing dir has none.
func list(what, dir, ext string) ([]fs.DirEntry, error) {
	ents, err := readDir(what, dir)
	out := ents[:0]
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ext) && !strings.HasPrefix(n, tmpPrefix) {
			out = append(out, e)
		}
	}
	return out, err
}

// readDir reads a state dir or the tombstone dir, sorted by name; a missing
// dir has no entries. The dir is checked (checkDir) on the fd it is read
// through, so a symlink or a dir of someone else is never walked.
func readDir(what, dir string) ([]fs.DirEntry, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ENOENT:
		return nil, nil
	case err == unix.ELOOP || err == unix.ENOTDIR:
		if err := checkDir(what, dir); err != nil {
			return nil, err // names what is there instead
		}
		fallthrough
	case err != nil:
		return nil, fmt.Errorf("open %s %s: %w", what, dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat %s %s: %w", what, dir, err)
	}
	if err := checkDirStat(what, dir, &st); err != nil {
		return nil, err
	}
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, dir, err)
	}
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return ents, nil
}

// loadEntry loads one listed file (nil when it vanished meanwhile). One the
// listing shows is not a regular file is discarded without being opened.
func (s *Store) loadEntry(dir string, de fs.DirEntry, tomb bool) (*Entry, error) {
	n := de.Name()
	path := filepath.Join(dir, n)
	if !de.Type().IsRegular() {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err == unix.ENOENT {
			return nil, nil
		} else if err != nil {
			return nil, fmt.Errorf("lstat %s: %w", path, err)
		}
		if bad := notRegular(st.Mode); bad != nil {
			return nil, s.discard(path, bad.kind, bad.reason)
		}
	}
	name := strings.TrimSuffix(n, recordExt)
	if tomb {
		name = tombKeyName(n)
	}
	r, err := s.load(path, name)
	if r == nil || err != nil {
		return nil, err
	}
	if tomb {
		asTombstone(r, n)
	}
	return &Entry{path, r}, nil
}

// tombPath names a new tombstone of k: the time first, so that listing
// order is age order.
func (s *Store) tombPath(k record.Key) string {
	return filepath.Join(s.dir, tombDir, fmt.Sprintf("%0*d-%s%s", tombTimeDigits, time.Now().UnixNano(), baseName(k), tombExt))
}

// tombKeyName is the key name in a tombstone's file name (see tombPath).
func tombKeyName(file string) string {
	stem := strings.TrimSuffix(file, tombExt)
	if len(stem) > tombTimeDigits && stem[tombTimeDigits] == '-' {
		return stem[tombTimeDigits+1:]
	}
	return stem
}

// Tombstone turns the attachment's live record into a tombstone by moving
// the file (no rewrite: DEL stays cheap). The name starts with the time, so
// that listing order is age order; several tombstones of one key may exist
// (one per sandbox that used it). The caller must hold the lock.
func (s *Store) Tombstone(k record.Key) (string, error) {
	if s.readOnly {
		return "", errReadOnly
	}
	if err := s.makeTombDir(); err != nil {
		return "", err
	}
	path := s.tombPath(k)
	if err := unix.Rename(s.recordPath(k), path); err != nil {
		return "", fmt.Errorf("move record %s to tombstones: %w", k, err)
	}
	return path, nil
}

// asTombstone marks a record loaded from the tombstone dir: its time comes
// from the file name, and a pin it named is gone (DEL removed it).
func asTombstone(r *record.Record, name string) {
	r.Pin = nil
	if len(name) > tombTimeDigits && name[tombTimeDigits] == '-' {
		if ns, err := strconv.ParseInt(name[:tombTimeDigits], 10, 64); err == nil {
			t := time.Unix(0, ns).UTC()
			r.TombstonedAt = &t
			return
		}
	}
	t := r.Updated
	r.TombstonedAt = &t
}

// Rewrite replaces the file at path (a record or a tombstone listed by
// Entries) with r.
func (s *Store) Rewrite(path string, r *record.Record) error {
	if !s.owns(path) {
		return fmt.Errorf("%s is not in the state dir", path)
	}
	return s.writeAtomic(path, r, "")
}

// RemoveFile removes a record or tombstone listed by Entries.
func (s *Store) RemoveFile(path string) error {
	if s.readOnly {
		return errReadOnly
	}
	if !s.owns(path) {
		return fmt.Errorf("%s is not in the state dir", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

func (s *Store) owns(path string) bool {
	d := filepath.Dir(path)
	return d == s.dir || d == filepath.Join(s.dir, tombDir)
}

func encode(r *record.Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode record %s: %w", r.Key, err)
	}
	return append(b, '\n'), nil
}
