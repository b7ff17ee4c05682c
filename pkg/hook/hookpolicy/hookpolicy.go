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
		b, err := os.ReadFile(DefaultPath)
		if errors.Is(err, fs.ErrNotExist) {
			return Default(), nil
		}
		if err != nil {
			return Policy{}, fmt.Errorf("failed to read hook policy %q: %w", DefaultPath, err)
		}
		return parse(DefaultPath, b)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Policy{}, fmt.Errorf("failed to read hook policy %q: %w", path, err)
	}
	return parse(path, b)
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
	if b, rerr := os.ReadFile(path); rerr == nil {
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
