package store

import (
	"encoding/json"
	"errors"
	"fmt"
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
	tombDir = "tombstones"
	tombExt = ".tomb"
)

// Entry is one record or tombstone file with its decoded content.
type Entry struct {
	Path   string
	Record *record.Record
}

// Entries loads every record and tombstone of the current boot. Files of
// another boot are removed and corrupt ones moved aside, as Load does; each
// such file is reported in problems, and walking goes on.
func (s *Store) Entries() (records, tombstones []Entry, problems []error) {
	records, problems = s.load(s.dir, recordExt, false)
	tombstones, p := s.load(filepath.Join(s.dir, tombDir), tombExt, true)
	return records, tombstones, append(problems, p...)
}

// SweepWindow serves DEL's bounded tombstone sweep with one directory read:
// when more than above tombstones exist, it loads at most max of them in
// age order from the one start picks (wrapping around), so that the window
// moves from call to call and tombstones whose links live on cannot shield
// the others. Otherwise it loads nothing.
func (s *Store) SweepWindow(above, max int, start func(n int) int) ([]Entry, []error) {
	dir := filepath.Join(s.dir, tombDir)
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("read %s: %w", dir, err)}
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, []error{fmt.Errorf("read %s: %w", dir, err)}
	}
	if len(names) <= above {
		return nil, nil
	}
	slices.Sort(names)
	var out []Entry
	var problems []error
	first := start(len(names))
	for i := 0; i < len(names) && len(out)+len(problems) < max; i++ {
		n := names[(first+i)%len(names)]
		if !strings.HasSuffix(n, tombExt) || strings.HasPrefix(n, tmpPrefix) {
			continue
		}
		path := filepath.Join(dir, n)
		r, err := s.loadFile(path)
		switch {
		case err != nil:
			problems = append(problems, err)
		case r != nil:
			asTombstone(r, n)
			out = append(out, Entry{path, r})
		}
	}
	return out, problems
}

// RemoveStaleTemps removes temp files older than age: what writers killed
// between creating and renaming them left behind (never a record).
func (s *Store) RemoveStaleTemps(age time.Duration) (removed int, err error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, fmt.Errorf("read state dir: %w", err)
	}
	cutoff := time.Now().Add(-age)
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
			if os.Remove(filepath.Join(s.dir, e.Name())) == nil {
				removed++
			}
		}
	}
	return removed, nil
}

func (s *Store) load(dir, ext string, tomb bool) (out []Entry, problems []error) {
	ents, err := os.ReadDir(dir) // sorted by name
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("read %s: %w", dir, err)}
	}
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(n, tmpPrefix) || !strings.HasSuffix(n, ext) {
			continue
		}
		path := filepath.Join(dir, n)
		r, err := s.loadFile(path)
		switch {
		case err != nil:
			problems = append(problems, err)
		case r == nil: // vanished meanwhile
		default:
			if tomb {
				asTombstone(r, n)
			}
			out = append(out, Entry{path, r})
		}
	}
	return out, problems
}

// loadFile decodes one file, discarding it if it is bad or of another boot.
func (s *Store) loadFile(path string) (*record.Record, error) {
	b, err := readFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	r, err := s.decode(b)
	if err != nil {
		return nil, s.quarantine(path, err.Error())
	}
	if r.BootID != s.bootID && s.readOnly {
		return nil, &DiscardedError{Path: path, Reason: fmt.Sprintf("written by boot %s, this boot is %s", r.BootID, s.bootID), Kept: true}
	}
	if r.BootID != s.bootID {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove %s of boot %s: %w", path, r.BootID, err)
		}
		return nil, &DiscardedError{Path: path, Reason: fmt.Sprintf("written by boot %s, this boot is %s", r.BootID, s.bootID)}
	}
	return r, nil
}

// Tombstone turns the attachment's live record into a tombstone by moving
// the file (no rewrite: DEL stays cheap). The name starts with the time, so
// that listing order is age order; several tombstones of one key may exist
// (one per sandbox that used it). The caller must hold the lock.
func (s *Store) Tombstone(k record.Key) (string, error) {
	if s.readOnly {
		return "", errReadOnly
	}
	dir := filepath.Join(s.dir, tombDir)
	if err := unix.Mkdir(dir, 0o700); err != nil && err != unix.EEXIST {
		return "", fmt.Errorf("create tombstone dir: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%020d-%s%s", time.Now().UnixNano(), baseName(k), tombExt))
	if err := unix.Rename(s.recordPath(k), path); err != nil {
		return "", fmt.Errorf("move record %s to tombstones: %w", k, err)
	}
	return path, nil
}

// SaveTombstone writes r as a new tombstone (for tools and tests; DEL uses
// Tombstone, which moves the live record instead).
func (s *Store) SaveTombstone(r *record.Record) (string, error) {
	dir := filepath.Join(s.dir, tombDir)
	if err := unix.Mkdir(dir, 0o700); err != nil && err != unix.EEXIST {
		return "", fmt.Errorf("create tombstone dir: %w", err)
	}
	t := *r
	t.Pin, t.TombstonedAt = nil, nil
	path := filepath.Join(dir, fmt.Sprintf("%020d-%s%s", time.Now().UnixNano(), baseName(r.Key), tombExt))
	return path, s.writeAtomic(path, &t)
}

// asTombstone marks a record loaded from the tombstone dir: its time comes
// from the file name, and a pin it named is gone (DEL removed it).
func asTombstone(r *record.Record, name string) {
	r.Pin = nil
	if i := strings.IndexByte(name, '-'); i > 0 {
		if ns, err := strconv.ParseInt(name[:i], 10, 64); err == nil {
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
	return s.writeAtomic(path, r)
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
