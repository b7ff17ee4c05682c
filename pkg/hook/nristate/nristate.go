// Package nristate is the small file through which leakguard-nri tells the
// node agent (leakguardctl serve) whether it is connected to the runtime:
// leakguard-nri rewrites it atomically whenever its connection changes and
// every Heartbeat, the agent reads it at scrape time. A file not refreshed
// for StaleAfter belongs to a plugin that is gone (killed, or its node
// restarted), so it reads as not connected.
//
// It lives outside leakguard's state dir on purpose: every *.json there is
// taken for an attachment record.
package nristate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// DefaultPath is where leakguard-nri writes its state.
	DefaultPath = "/run/leakguard-nri/state.json"
	// Heartbeat is how often a running plugin rewrites the file.
	Heartbeat = 10 * time.Second
	// StaleAfter is how old a file may be before it is taken for a dead
	// writer's: three missed heartbeats.
	StaleAfter = 3 * Heartbeat
	// maxSize caps what is read of the file.
	maxSize = 64 << 10
)

// State is what leakguard-nri reports. Field names are stable.
type State struct {
	// PID is the writer's process ID, for the operator.
	PID int `json:"pid"`
	// Connected: registered with the runtime right now; Since is when that
	// last changed.
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
	// Updated is when the file was last written.
	Updated time.Time `json:"updated"`
	// Injected counts containers the hook was added to (optional).
	Injected uint64 `json:"injected,omitempty"`
}

// ConnectedAt tells whether the plugin counts as connected at now: it says
// so, and it said so recently. A file dated more than StaleAfter ahead was
// written before the clock stepped back: a live writer rewrites it within a
// Heartbeat, so it proves nothing about one.
func (s State) ConnectedAt(now time.Time) bool {
	age := now.Sub(s.Updated)
	return s.Connected && age <= StaleAfter && age >= -StaleAfter
}

// Write replaces path with s atomically (temp file in the same dir, fsync,
// rename), creating the dir (0755) if needed.
func Write(path string, s State) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ErrNoState: no plugin has written the file (leakguard-nri is not used).
var ErrNoState = errors.New("no NRI plugin state")

// Read reads path: a regular file (never a FIFO or device: it is opened
// without blocking and fstat'ed), at most 64 KiB, holding a State.
func Read(path string) (State, error) {
	var s State
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return s, ErrNoState
	}
	if err != nil {
		return s, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return s, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return s, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return s, err
	}
	if len(data) > maxSize {
		return s, fmt.Errorf("%s: over %d bytes", path, maxSize)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
