package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/leakguard/leakguard/pkg/cniplugin/record"
)

// DiscardedError reports a record that exists but must not be acted upon: it
// was written by another boot (removed), or it is corrupt or of an unknown
// schema (moved aside for inspection). Callers proceed as if there were no
// record, and log this.
type DiscardedError struct {
	Path    string
	Reason  string
	MovedTo string // empty when the file was removed
	Kept    bool   // a read-only store left the file as it was
}

func (e *DiscardedError) Error() string {
	if e.Kept {
		return fmt.Sprintf("record %s not usable (%s); left in place (read-only)", e.Path, e.Reason)
	}
	if e.MovedTo != "" {
		return fmt.Sprintf("record %s discarded (%s); moved to %s", e.Path, e.Reason, e.MovedTo)
	}
	return fmt.Sprintf("record %s discarded (%s); removed", e.Path, e.Reason)
}

// Load returns the attachment's record, or nil when there is none. The caller
// must hold the attachment's lock.
func (s *Store) Load(k record.Key) (*record.Record, error) {
	path := s.recordPath(k)
	b, err := readFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read record %s: %w", path, err)
	}
	r, err := s.decode(b)
	if err != nil {
		return nil, s.quarantine(path, err.Error())
	}
	if r.Key != k {
		return nil, s.quarantine(path, fmt.Sprintf("holds key %s, expected %s", r.Key, k))
	}
	if r.BootID != s.bootID && s.readOnly {
		return nil, &DiscardedError{Path: path, Reason: fmt.Sprintf("written by boot %s, this boot is %s", r.BootID, s.bootID), Kept: true}
	}
	if r.BootID != s.bootID {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove record of boot %s: %w", r.BootID, err)
		}
		return nil, &DiscardedError{Path: path, Reason: fmt.Sprintf("written by boot %s, this boot is %s", r.BootID, s.bootID)}
	}
	return r, nil
}

func (s *Store) decode(b []byte) (*record.Record, error) {
	var r record.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("corrupt: %v", err)
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("invalid: %v", err)
	}
	return &r, nil
}

// quarantine moves a bad record aside, keeping it for inspection.
func (s *Store) quarantine(path, reason string) error {
	if s.readOnly {
		return &DiscardedError{Path: path, Reason: reason, Kept: true}
	}
	to := path + corruptTag + strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := os.Rename(path, to); err != nil {
		return fmt.Errorf("move aside bad record %s (%s): %w", path, reason, err)
	}
	return &DiscardedError{Path: path, Reason: reason, MovedTo: to}
}

// Save writes the attachment's live record atomically. The caller must hold
// the attachment's lock.
func (s *Store) Save(r *record.Record) error {
	return s.writeAtomic(s.recordPath(r.Key), r)
}

// writeAtomic writes a temp file in the same directory, fsyncs it (unless on
// tmpfs), renames it over path and fsyncs the directory. A crash at any point
// leaves either the old file or the new one, never a partial file at path.
func (s *Store) writeAtomic(path string, r *record.Record) error {
	if s.readOnly {
		return errReadOnly
	}
	r.Schema = record.Schema
	r.BootID = s.bootID
	b, err := encode(r)
	if err != nil {
		return err
	}
	tmpfs := s.onTmpfs()
	tmp, err := writeTemp(s.dir, b, !tmpfs)
	if err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if err := unix.Rename(tmp, path); err != nil {
		_ = unix.Unlink(tmp)
		return fmt.Errorf("rename record into place: %w", err)
	}
	if !tmpfs {
		return syncDir(s.dir)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open state dir for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync state dir: %w", err)
	}
	return nil
}

// Remove forgets the attachment's record. A missing record is not an error.
func (s *Store) Remove(k record.Key) error {
	if s.readOnly {
		return errReadOnly
	}
	if err := os.Remove(s.recordPath(k)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove record %s: %w", k, err)
	}
	return nil
}
