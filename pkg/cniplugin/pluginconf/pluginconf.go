// Package pluginconf parses and validates leakguard's network configuration
// (its entry in a conflist) and the prevResult of the plugin before it.
//
// One table of field rules (fields.go) serves both parses: the strict one of
// ADD, CHECK, GC and STATUS fails with code 7 naming the field; the lenient
// one of DEL falls back to the field's default and reports the problem.
package pluginconf

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/leakguard/leakguard/pkg/cniplugin/delegate"
)

// Defaults for the optional fields.
const (
	DefaultStateDir = "/run/leakguard"
	// DefaultPinDir is where pins go with the default stateDir: pins live in
	// <stateDir>/netns unless pinDir says otherwise, so that each state dir
	// owns its pins.
	DefaultPinDir   = DefaultStateDir + "/" + pinSubdir
	pinSubdir       = "netns"
	DefaultLogLevel = "info"
)

// Config is leakguard's entry in a conflist.
type Config struct {
	types.PluginConf

	// StateDir holds one record per attachment. Keep it on tmpfs (/run):
	// records are only valid for the boot that wrote them.
	StateDir string `json:"stateDir"`
	// LogFile receives structured logs; empty means errors go to stderr only.
	LogFile string `json:"logFile"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"logLevel"`
	// PinNetns bind-mounts the pod netns under PinDir (default
	// <stateDir>/netns) at ADD so that DEL can still enter it when the
	// runtime's path is gone (rescue). The pin keeps the netns alive until
	// DEL or GC of the attachment.
	PinNetns bool   `json:"pinNetns"`
	PinDir   string `json:"pinDir"`
	// Delegate, when set, is the main plugin leakguard wraps (wrapper mode);
	// nil in chained mode.
	Delegate *delegate.Conf `json:"-"`

	// LegacyAttachments is the GC list under the key older libcni versions
	// also send (CNI spec 1.1.0 named it so by mistake).
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// GCList returns the attachments a GC call says are still valid, and
// whether a list was given at all (an absent or null list is not an empty
// one: without a list nothing may be presumed stale).
func (c *Config) GCList() (map[types.GCAttachment]bool, bool) {
	if c.ValidAttachments == nil && c.LegacyAttachments == nil {
		return nil, false
	}
	valid := map[types.GCAttachment]bool{}
	for _, a := range append(c.ValidAttachments, c.LegacyAttachments...) {
		valid[a] = true
	}
	return valid, true
}

// FieldError is a problem with one field. At DEL the field was reset to its
// default; Severe means that default may miss the attachment's state (a
// mistyped stateDir: DEL looks for records in the wrong place).
type FieldError struct {
	Field  string
	Severe bool
	Err    error
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s: %v", e.Field, e.Err) }
func (e *FieldError) Unwrap() error { return e.Err }

// Parse decodes stdin into a Config with defaults applied and prevResult
// parsed in the config's cniVersion. Every failure is a *types.Error with
// code 7 (invalid network config) naming the field at fault.
func Parse(stdin []byte) (*Config, error) {
	c, raw, err := decodeBase(stdin)
	if err != nil {
		return nil, invalid("failed to parse network configuration: %v", err)
	}
	for _, f := range fields {
		if err := f.apply(c, raw); err != nil {
			return nil, invalid("%v", &FieldError{Field: f.key, Err: err})
		}
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, invalid("failed to parse prevResult: %v", err)
	}
	return c, nil
}

// ParseForDel is Parse for DEL, which must not fail on what it can work
// around: the config may have been edited since ADD, and a chain's DEL stops
// at the first failing plugin. Each invalid or mistyped field falls back to
// its default, an unusable prevResult is dropped (DEL works from its own
// record), and every such problem is returned for logging (a *FieldError
// per field). Only stdin whose CNI fields cannot be decoded yields no config.
func ParseForDel(stdin []byte) (*Config, []error) {
	c, raw, err := decodeBase(stdin)
	if err != nil {
		return nil, []error{fmt.Errorf("network configuration: %w", err)}
	}
	var problems []error
	for _, f := range fields {
		if err := f.apply(c, raw); err != nil {
			f.reset(c)
			problems = append(problems, &FieldError{Field: f.key, Severe: f.severe, Err: fmt.Errorf("%w; using %q", err, f.shown(c))})
		}
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		problems = append(problems, &FieldError{Field: "prevResult", Err: fmt.Errorf("unusable, ignored: %w", err)})
		c.PrevResult, c.RawPrevResult = nil, nil
	}
	return c, problems
}

// decodeBase decodes the CNI fields (name, cniVersion, prevResult, the GC
// list, ...) and returns leakguard's own keys raw, for the field table.
func decodeBase(stdin []byte) (*Config, map[string]json.RawMessage, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return nil, nil, err
	}
	c := &Config{}
	if err := json.Unmarshal(stdin, &c.PluginConf); err != nil {
		return nil, nil, err
	}
	return c, raw, nil
}

// Level returns LogLevel as a slog level.
func (c *Config) Level() (slog.Level, error) {
	switch strings.ToLower(c.LogLevel) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q must be one of debug, info, warn, error", c.LogLevel)
}

func invalid(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}
