// Package pluginconf parses and validates leakguard's network configuration
// (its entry in a conflist) and the prevResult of the plugin before it.
package pluginconf

import (
	"encoding/json"
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
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, invalid("failed to parse prevResult: %v", err)
	}
	return c, nil
}

func (c *Config) validate() error {
	if !filepath.IsAbs(c.StateDir) || filepath.Clean(c.StateDir) == "/" {
		return invalid("stateDir %q must be an absolute path below /", c.StateDir)
	}
	c.StateDir = filepath.Clean(c.StateDir)
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
