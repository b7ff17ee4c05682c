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

// DiscardKind says why a record or tombstone file was not used. Callers
// switch on it; String gives its stable name (logs, leakguardctl JSON).
type DiscardKind int

const (
	// OtherBoot: written by another boot, whose ifindexes and netns inodes
	// mean nothing now. Removed.
	OtherBoot DiscardKind = iota + 1
	// Corrupt: not JSON, invalid, of an unknown schema, or holding another
	// attachment's key than its file name says. Moved aside.
	Corrupt
	// TooLarge: over maxStateFile bytes; moved aside without being read.
	TooLarge
	// NotRegular: a FIFO, symlink, socket, device or directory; moved
	// aside without being read (or opened, when the walk saw its type).
	NotRegular
)

func (k DiscardKind) String() string {
	switch k {
	case OtherBoot:
		return "other-boot"
	case Corrupt:
		return "corrupt"
	case TooLarge:
		return "too-large"
	case NotRegular:
		return "not-regular-file"
	}
	return "unknown"
}

// DiscardedError reports a record or tombstone file that exists but must not
// be acted upon. Callers proceed as if there were no such file, and log or
// report it.
type DiscardedError struct {
	Kind    DiscardKind
	Path    string
	Reason  string
	MovedTo string // set when the file was moved aside
	Kept    bool   // a read-only store left the file as it was
}

func (e *DiscardedError) Error() string {
	switch {
	case e.Kept:
		return fmt.Sprintf("state file %s not usable (%s: %s); left in place (read-only)", e.Path, e.Kind, e.Reason)
	case e.MovedTo != "":
		return fmt.Sprintf("state file %s discarded (%s: %s); moved to %s", e.Path, e.Kind, e.Reason, e.MovedTo)
	}
	return fmt.Sprintf("state file %s discarded (%s: %s); removed", e.Path, e.Kind, e.Reason)
}

// Load returns the attachment's record, or nil when there is none. The caller
// must hold the attachment's lock.
func (s *Store) Load(k record.Key) (*record.Record, error) {
	return s.load(s.recordPath(k), baseName(k))
}

// load is the one way a record or tombstone file is read: it returns the
// decoded record, nil when the file is missing, or a *DiscardedError (after
// discarding the file) when it is unusable. name is the key name the file
// must hold (its file name says which attachment it belongs to).
func (s *Store) load(path, name string) (*record.Record, error) {
	b, err := readState(path)
	var bad *badFile
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil
	case errors.As(err, &bad):
		return nil, s.discard(path, bad.kind, bad.reason)
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	r, err := decode(b)
	if err != nil {
		return nil, s.discard(path, Corrupt, err.Error())
	}
	if n := r.Key.Name(); n != name {
		return nil, s.discard(path, Corrupt, fmt.Sprintf("holds key %s, which is not the file's", r.Key))
	}
	if r.BootID != s.bootID {
		return nil, s.discard(path, OtherBoot, fmt.Sprintf("written by boot %s, this boot is %s", r.BootID, s.bootID))
	}
	return r, nil
}

func decode(b []byte) (*record.Record, error) {
	var r record.Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("not a record: %v", err)
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("invalid: %v", err)
	}
	return &r, nil
}

// discard gets an unusable file out of every reader's way: a record of
// another boot is removed, anything else is moved aside (renamed, never
// opened) for inspection. A read-only store leaves it in place.
func (s *Store) discard(path string, kind DiscardKind, reason string) error {
	d := &DiscardedError{Kind: kind, Path: path, Reason: reason}
	switch {
	case s.readOnly:
		d.Kept = true
	case kind == OtherBoot:
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s (%s: %s): %w", path, kind, reason, err)
		}
	default:
		d.MovedTo = path + corruptTag + strconv.FormatInt(time.Now().UnixNano(), 10)
		if err := os.Rename(path, d.MovedTo); err != nil {
			return fmt.Errorf("move aside %s (%s: %s): %w", path, kind, reason, err)
		}
	}
	return d
}

// Save writes the attachment's live record atomically. The caller must hold
// the attachment's lock.
func (s *Store) Save(r *record.Record) error {
	return s.writeAtomic(s.recordPath(r.Key), r, baseName(r.Key))
}

// writeAtomic writes a temp file in the state dir (see writeTemp for name),
// fsyncs it (unless on tmpfs), renames it over path and fsyncs the
// directory. A crash at any point leaves either the old file or the new one,
// never a partial file at path.
func (s *Store) writeAtomic(path string, r *record.Record, name string) error {
	if s.readOnly {
		return errReadOnly
	}
	r.Schema = record.Schema
	r.BootID = s.bootID
	b, err := encode(r)
	if err != nil {
		return err
	}
	if len(b) > maxStateFile {
		// No reader would use it: keep the previous file instead.
		return fmt.Errorf("record %s is %d bytes, over the %d-byte cap of state files", r.Key, len(b), maxStateFile)
	}
	tmpfs := s.onTmpfs()
	tmp, err := s.writeTemp(name, b, !tmpfs)
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
