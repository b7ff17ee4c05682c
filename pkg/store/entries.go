package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/leakguard/leakguard/pkg/record"
)

const tombExt = ".tomb"

// Entry is one record or tombstone file with its decoded content.
type Entry struct {
	Path   string
	Record *record.Record
}

// Entries loads every record and tombstone of the current boot. Files of
// another boot are removed and corrupt ones moved aside, as Load does; each
// such file is reported in problems, and walking goes on.
func (s *Store) Entries() (records, tombstones []Entry, problems []error) {
	return s.entries(true)
}

// Tombstones loads only the tombstones, for the cheap sweep after a DEL.
func (s *Store) Tombstones() ([]Entry, []error) {
	_, t, problems := s.entries(false)
	return t, problems
}

func (s *Store) entries(withRecords bool) (records, tombstones []Entry, problems []error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, []error{fmt.Errorf("read state dir: %w", err)}
	}
	for _, e := range ents {
		n := e.Name()
		isRec, isTomb := strings.HasSuffix(n, recordExt), strings.HasSuffix(n, tombExt)
		if !e.Type().IsRegular() || strings.HasPrefix(n, tmpPrefix) || (!isRec && !isTomb) || (isRec && !withRecords) {
			continue
		}
		path := filepath.Join(s.dir, n)
		r, err := s.loadFile(path)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		if r == nil {
			continue // vanished meanwhile
		}
		if isTomb != r.IsTombstone() {
			problems = append(problems, s.quarantine(path, "tombstone flag does not match file name"))
			continue
		}
		if isTomb {
			tombstones = append(tombstones, Entry{path, r})
		} else {
			records = append(records, Entry{path, r})
		}
	}
	return records, tombstones, problems
}

// loadFile decodes one file, discarding it if it is bad or of another boot.
func (s *Store) loadFile(path string) (*record.Record, error) {
	b, err := os.ReadFile(path)
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
	if r.BootID != s.bootID {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove %s of boot %s: %w", path, r.BootID, err)
		}
		return nil, &DiscardedError{Path: path, Reason: fmt.Sprintf("written by boot %s, this boot is %s", r.BootID, s.bootID)}
	}
	return r, nil
}

// SaveTombstone writes r as a new tombstone file beside the records. Several
// tombstones of one key may exist (one per sandbox that used it).
func (s *Store) SaveTombstone(r *record.Record) (string, error) {
	now := time.Now().UTC()
	t := *r
	t.TombstonedAt = &now
	t.Pin = nil
	path := filepath.Join(s.dir, baseName(r.Key)+"."+strconv.FormatInt(now.UnixNano(), 10)+tombExt)
	return path, s.writeAtomic(path, &t)
}

// Rewrite replaces the file at path (a record or a tombstone listed by
// Entries) with r.
func (s *Store) Rewrite(path string, r *record.Record) error {
	if filepath.Dir(path) != s.dir {
		return fmt.Errorf("%s is not in the state dir", path)
	}
	return s.writeAtomic(path, r)
}

// RemoveFile removes a record or tombstone listed by Entries.
func (s *Store) RemoveFile(path string) error {
	if filepath.Dir(path) != s.dir {
		return fmt.Errorf("%s is not in the state dir", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

func encode(r *record.Record) ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode record %s: %w", r.Key, err)
	}
	return append(b, '\n'), nil
}
