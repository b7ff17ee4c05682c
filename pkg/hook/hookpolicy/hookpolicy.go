// Package hookpolicy is leakguard-hook's operator configuration: which
// containers to protect, what to do when the hook itself fails, where to log.
package hookpolicy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// DefaultPath is read when no --config is given and the file exists.
const DefaultPath = "/etc/leakguard/hook.json"

// Mode selects which containers get their gssproxy config edited.
type Mode string

const (
	// ModePrivileged edits privileged containers only (the default).
	ModePrivileged Mode = "privileged"
	// ModeAll edits every container that has its own network namespace.
	ModeAll Mode = "all"
	// ModeOff never edits; the hook only logs its decision.
	ModeOff Mode = "off"
)

// Policy is the parsed configuration file.
type Policy struct {
	Mode Mode `json:"mode,omitempty"`
	// FailClosed makes internal errors abort container creation instead of
	// being logged and ignored.
	FailClosed bool `json:"failClosed,omitempty"`
	// LogFile receives the per-container log lines (appended); stderr when empty.
	LogFile string `json:"logFile,omitempty"`
}

// Default is the policy without a configuration file.
func Default() Policy { return Policy{Mode: ModePrivileged} }

// Load reads the policy at path. An empty path means DefaultPath if it
// exists, else Default().
func Load(path string) (Policy, error) {
	if path == "" {
		b, err := readFile(DefaultPath)
		if errors.Is(err, fs.ErrNotExist) {
			return Default(), nil
		}
		if err != nil {
			return Policy{}, fmt.Errorf("failed to read hook policy %q: %w", DefaultPath, err)
		}
		return parse(DefaultPath, b)
	}
	b, err := readFile(path)
	if err != nil {
		return Policy{}, fmt.Errorf("failed to read hook policy %q: %w", path, err)
	}
	return parse(path, b)
}

// maxPolicy bounds the policy file: it has three short keys.
const maxPolicy = 64 << 10

// errNotPolicyFile is returned for a policy path that is not a regular file
// of at most maxPolicy bytes.
var errNotPolicyFile = errors.New("not a regular file of at most 64 KiB")

// readFile reads a policy file without ever blocking on a FIFO or opening a
// device for real (O_NONBLOCK, then only a regular file is read). Symlinks
// are followed: the path is the operator's, and a Kubernetes ConfigMap
// mount is a chain of symlinks.
func readFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxPolicy {
		return nil, fmt.Errorf("%w (%v, %d bytes)", errNotPolicyFile, fi.Mode().Type(), fi.Size())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPolicy+1))
	if err == nil && len(b) > maxPolicy {
		err = errNotPolicyFile
	}
	return b, err
}

// LoadOrDefault is Load for the hook, which must never block a container
// because of its own configuration: when the policy file cannot be used
// (missing though named explicitly, unreadable, invalid), it returns the
// error together with Default(), so the caller can report the error and go
// on. That fallback never fails closed. Its LogFile is kept from the file when
// the file is a JSON object whose "logFile" is an absolute path, so the report
// still reaches the log the operator reads.
func LoadOrDefault(path string) (Policy, error) {
	p, err := Load(path)
	if err == nil {
		return p, nil
	}
	p = Default()
	if path == "" {
		path = DefaultPath
	}
	if b, rerr := readFile(path); rerr == nil {
		var hint struct {
			LogFile string `json:"logFile"`
		}
		if json.Unmarshal(b, &hint) == nil && filepath.IsAbs(hint.LogFile) {
			p.LogFile = hint.LogFile
		}
	}
	return p, err
}

func parse(path string, b []byte) (Policy, error) {
	p := Default()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Policy{}, fmt.Errorf("invalid hook policy %q: %w", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Policy{}, fmt.Errorf("invalid hook policy %q: trailing data after the JSON object", path)
	}
	if err := p.Validate(); err != nil {
		return Policy{}, fmt.Errorf("invalid hook policy %q: %w", path, err)
	}
	return p, nil
}

// Validate checks the values a decoder cannot.
func (p Policy) Validate() error {
	if p.LogFile != "" && !filepath.IsAbs(p.LogFile) {
		return fmt.Errorf("logFile %q is not an absolute path", p.LogFile)
	}
	switch p.Mode {
	case ModePrivileged, ModeAll, ModeOff:
		return nil
	}
	return fmt.Errorf("mode %q is not one of %q, %q, %q", p.Mode, ModePrivileged, ModeAll, ModeOff)
}
