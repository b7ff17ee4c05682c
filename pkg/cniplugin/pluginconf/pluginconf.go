// Package pluginconf parses and validates leakguard's network configuration
// (its entry in a conflist) and the prevResult of the plugin before it.
package pluginconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
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
	// <stateDir>/netns) at ADD so that DEL can
	// still enter it when the runtime's path is gone (rescue). The pin keeps
	// the netns alive until DEL or GC of the attachment.
	PinNetns bool   `json:"pinNetns"`
	PinDir   string `json:"pinDir"`

	// LegacyAttachments is the GC list under the key older libcni versions
	// also send (CNI spec 1.1.0 named it so by mistake).
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// GCList returns the attachments a GC call says are still valid, and
// whether a list was given at all (an absent or null list is not an empty
// one: without a list nothing may be presumed stale).
func (c *Config) GCList() (valid map[types.GCAttachment]bool, given bool) {
	if c.ValidAttachments == nil && c.LegacyAttachments == nil {
		return nil, false
	}
	valid = map[types.GCAttachment]bool{}
	for _, a := range append(c.ValidAttachments, c.LegacyAttachments...) {
		valid[a] = true
	}
	return valid, true
}

// Parse decodes stdin into a Config with defaults applied and prevResult
// parsed in the config's cniVersion. Every failure is a *types.Error with
// code 7 (invalid network config) naming the field at fault.
func Parse(stdin []byte) (*Config, error) {
	c := &Config{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, invalid("failed to parse network configuration: %v", err)
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.PinDir == "" {
		c.PinDir = filepath.Join(c.StateDir, pinSubdir)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, invalid("failed to parse prevResult: %v", err)
	}
	return c, nil
}

// ParseForDel is Parse for DEL, which must not fail on what it can work
// around: the config may have been edited since ADD, and a chain's DEL stops
// at the first failing plugin. Each invalid field falls back to its default,
// an unusable prevResult is dropped (DEL works from its own record), and
// every such problem is returned for logging. Only stdin that is not a JSON
// object at all yields no config.
func ParseForDel(stdin []byte) (*Config, []error) {
	var problems []error
	c := &Config{}
	if err := json.Unmarshal(stdin, c); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			// encoding/json skipped only the mistyped field(s) and decoded
			// the rest: keep it, the field falls back to its default.
			problems = append(problems, fmt.Errorf("network configuration: %v; field left at its default", err))
		} else {
			problems = append(problems, fmt.Errorf("network configuration: %v; using defaults", err))
			c = &Config{}
			if err := json.Unmarshal(stdin, &c.PluginConf); err != nil {
				return nil, append(problems, err)
			}
		}
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	fix := func(field string, bad bool, val *string, def string) {
		if bad {
			problems = append(problems, fmt.Errorf("%s %q is invalid; using %q", field, *val, def))
			*val = def
		}
	}
	fix("stateDir", !filepath.IsAbs(c.StateDir) || filepath.Clean(c.StateDir) == "/", &c.StateDir, DefaultStateDir)
	if c.PinDir == "" {
		c.PinDir = filepath.Join(c.StateDir, pinSubdir)
	}
	fix("pinDir", !filepath.IsAbs(c.PinDir) || filepath.Clean(c.PinDir) == "/", &c.PinDir, filepath.Join(c.StateDir, pinSubdir))
	fix("logFile", c.LogFile != "" && !filepath.IsAbs(c.LogFile), &c.LogFile, "")
	_, err := c.Level()
	fix("logLevel", err != nil && c.LogLevel != "", &c.LogLevel, DefaultLogLevel)
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	c.StateDir, c.PinDir = filepath.Clean(c.StateDir), filepath.Clean(c.PinDir)
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		problems = append(problems, fmt.Errorf("prevResult unusable, ignored: %v", err))
		c.PrevResult, c.RawPrevResult = nil, nil
	}
	return c, problems
}

func (c *Config) validate() error {
	if !filepath.IsAbs(c.StateDir) || filepath.Clean(c.StateDir) == "/" {
		return invalid("stateDir %q must be an absolute path below /", c.StateDir)
	}
	c.StateDir = filepath.Clean(c.StateDir)
	if !filepath.IsAbs(c.PinDir) || filepath.Clean(c.PinDir) == "/" {
		return invalid("pinDir %q must be an absolute path below /", c.PinDir)
	}
	c.PinDir = filepath.Clean(c.PinDir)
	if c.LogFile != "" && !filepath.IsAbs(c.LogFile) {
		return invalid("logFile %q must be an absolute path", c.LogFile)
	}
	if _, err := c.Level(); err != nil {
		return err
	}
	return nil
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
	return 0, invalid("logLevel %q must be one of debug, info, warn, error", c.LogLevel)
}

func invalid(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}
