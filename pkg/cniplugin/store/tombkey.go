package store

import (
	"path/filepath"
	"strings"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

// TombstonesOf loads the tombstones of one attachment: several can exist,
// one per DEL that left the host side to the main plugin (one per sandbox
// that used the key). Only names of exactly the form <time>-<key name>.tomb
// are read, so that no other key's tombstone is taken for this one (a key
// name can end like another's), and unusable files are discarded as
// Entries discards them. The caller must hold the attachment's lock.
func (s *Store) TombstonesOf(k record.Key) ([]Entry, []error) {
	dir := filepath.Join(s.dir, tombDir)
	ents, err := list("tombstone dir", dir, tombExt)
	if err != nil {
		return nil, []error{err}
	}
	want := baseName(k)
	var out []Entry
	var problems []error
	for _, de := range ents {
		if !isTombstoneOf(de.Name(), want) {
			continue
		}
		switch e, err := s.loadEntry(dir, de, true); {
		case err != nil:
			problems = append(problems, err)
		case e != nil:
			out = append(out, *e)
		}
	}
	return out, problems
}

// isTombstoneOf reports whether file is a tombstone name (see tombPath) of
// the key named name.
func isTombstoneOf(file, name string) bool {
	stem, ok := strings.CutSuffix(file, tombExt)
	return ok && len(stem) > tombTimeDigits && strings.Trim(stem[:tombTimeDigits], "0123456789") == "" &&
		tombKeyName(file) == name
}
