package nri

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/nri/pkg/api"
)

// Defaults of the command line.
const (
	DefaultHookPath = "/usr/libexec/leakguard/leakguard-hook"
	DefaultSocket   = api.DefaultSocketPath
	DefaultIdx      = "10"
	DefaultName     = "leakguard-nri"
	// HookTimeout is the createRuntime hook's timeout, in seconds, as in
	// docs/hook.md: the hook takes milliseconds, runc kills it after this.
	HookTimeout = 10
)

// Settings are what the plugin does for each container and where it logs.
// They come from the command line and, for a plugin the runtime starts
// (which gets no arguments), from the runtime's drop-in config
// (<plugin_config_path>/NN-leakguard-nri.conf), a JSON object with these keys.
type Settings struct {
	// HookPath is the leakguard-hook binary the runtime will run.
	HookPath string `json:"hookPath,omitempty"`
	// HookConfig is the hook's policy file, passed to it as --config; empty
	// means the hook's own default (hookpolicy.DefaultPath if it exists).
	HookConfig string `json:"hookConfig,omitempty"`
	// LogFile receives JSON log lines (appended); stderr when empty.
	LogFile string `json:"logFile,omitempty"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"logLevel,omitempty"`
	// StateFile, when set, is where the plugin reports whether it is
	// connected, for the node agent (pkg/hook/nristate; rewritten at each
	// change and every nristate.Heartbeat). A pre-installed plugin gets it
	// from the drop-in, so that leakguardctl serve knows when the hook is
	// no longer injected.
	StateFile string `json:"stateFile,omitempty"`
}

// Options configure a Plugin.
type Options struct {
	Settings
	// Preinstalled: the runtime started this process from its plugin_path
	// and handed it a connected socket (NRI_PLUGIN_SOCKET), its index and
	// name; Socket, Idx and Name are then unused and there is no reconnect:
	// the runtime starts a new instance when it restarts.
	Preinstalled bool
	// Socket is the runtime's NRI socket an external plugin dials.
	Socket string
	// Idx (two digits) and Name identify an external plugin to the runtime;
	// a pre-installed one's come from the runtime (set here for the log).
	Idx, Name string
	// Stderr receives the log when Settings.LogFile is empty, and errors.
	Stderr io.Writer
	// WaitForHook: an external plugin whose hook binary does not exist yet
	// waits for it (logged once, re-checked every HookPoll) instead of
	// failing: in a DaemonSet pod another container installs the hook, and
	// exiting would only crash-loop. Anything else wrong with the hook still
	// fails.
	WaitForHook bool
	// HookPoll is WaitForHook's re-check interval (default 1s).
	HookPoll time.Duration
	// BackoffMin and BackoffMax bound the delay between connection attempts
	// of an external plugin (defaults 100ms and 2s).
	BackoffMin, BackoffMax time.Duration
}

// ConfigError is a problem in the plugin's own configuration (command line,
// runtime drop-in): the plugin cannot run as asked. Commands exit 2 on it.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(format string, args ...any) error {
	return &ConfigError{fmt.Errorf(format, args...)}
}

// Validate checks the options that can be checked before connecting. The
// hook binary is checked too for an external plugin; a pre-installed plugin
// checks it once the runtime's drop-in config is known (in Configure), so
// that the runtime's log carries the reason.
func (o *Options) Validate() error {
	if !o.Preinstalled {
		if !filepath.IsAbs(o.Socket) {
			return configErrorf("socket %q is not an absolute path", o.Socket)
		}
		if err := api.CheckPluginIndex(o.Idx); err != nil {
			return &ConfigError{err}
		}
		if err := api.CheckPluginName(o.Name); err != nil {
			return &ConfigError{err}
		}
	}
	// A missing hook is waited for (Run) when asked to.
	waits := o.WaitForHook && hookMissing(o.HookPath)
	return o.Settings.validate(!o.Preinstalled && !waits)
}

// hookMissing: the hook path (followed, as execve does) does not exist.
func hookMissing(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}

func (s Settings) validate(checkHook bool) error {
	if _, err := ParseLevel(s.LogLevel); err != nil {
		return &ConfigError{err}
	}
	if s.LogFile != "" && !filepath.IsAbs(s.LogFile) {
		return configErrorf("log file %q is not an absolute path", s.LogFile)
	}
	if s.StateFile != "" && !filepath.IsAbs(s.StateFile) {
		return configErrorf("state file %q is not an absolute path", s.StateFile)
	}
	if s.HookConfig != "" && !filepath.IsAbs(s.HookConfig) {
		return configErrorf("hook config %q is not an absolute path", s.HookConfig)
	}
	if checkHook {
		if err := CheckHook(s.HookPath); err != nil {
			return &ConfigError{err}
		}
	}
	return nil
}

// merge returns s with the non-empty fields of the runtime's drop-in config
// (a JSON object, unknown keys refused) on top.
func (s Settings) merge(dropIn string) (Settings, error) {
	var d Settings
	dec := json.NewDecoder(strings.NewReader(dropIn))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return s, configErrorf("invalid plugin config from the runtime: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return s, configErrorf("invalid plugin config from the runtime: trailing data after the JSON object")
	}
	for _, f := range []struct{ dst, src *string }{
		{&s.HookPath, &d.HookPath}, {&s.HookConfig, &d.HookConfig},
		{&s.LogFile, &d.LogFile}, {&s.LogLevel, &d.LogLevel}, {&s.StateFile, &d.StateFile},
	} {
		if *f.src != "" {
			*f.dst = *f.src
		}
	}
	return s, nil
}

// ParseLevel reads a log level name; empty means info.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q is not one of debug, info, warn, error", s)
}

// CheckHook says why path cannot be handed to the runtime as the hook. runc
// fails a container whose hook it cannot execute, so the plugin injects the
// hook only while this returns nil. The runtime runs it as root: a file
// that another user could rewrite, or replace through a directory of
// theirs, is refused too.
func CheckHook(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("hook path %q is not an absolute path", path)
	}
	fi, err := os.Stat(path) // follows symlinks, as execve does
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("hook %q does not exist", path)
		}
		return fmt.Errorf("hook %q: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("hook %q is not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("hook %q is not executable (mode %04o)", path, fi.Mode().Perm())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("hook %q is writable by group or others (mode %04o): refusing to have the runtime run it as root", path, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("hook %q is owned by uid %d, not root", path, st.Uid)
	}
	return checkHookDirs(path)
}
