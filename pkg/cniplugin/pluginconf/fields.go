package pluginconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/leakguard/leakguard/pkg/cniplugin/delegate"
)

// field is the rule for one of leakguard's keys: how it is decoded, what
// its default is, and what makes it invalid. Rules run in table order, so a
// default may depend on an earlier field (pinDir on stateDir).
type field struct {
	key string
	// decode stores the raw JSON value into c.
	decode func(c *Config, v json.RawMessage) error
	// reset sets the default; applied when the key is absent (or empty)
	// and, at DEL, when the value is unusable.
	reset func(c *Config)
	// check validates (and may normalize) the value after decoding.
	check func(c *Config) error
	// shown is the value DEL falls back to, for its log line.
	shown func(c *Config) string
	// severe: falling back to the default may miss the attachment's state.
	severe bool
}

var fields = []field{
	{
		key:    "stateDir",
		decode: func(c *Config, v json.RawMessage) error { return json.Unmarshal(v, &c.StateDir) },
		reset:  func(c *Config) { c.StateDir = DefaultStateDir },
		check:  func(c *Config) error { return absBelowRoot(&c.StateDir) },
		shown:  func(c *Config) string { return c.StateDir },
		severe: true,
	},
	{
		key:    "pinDir",
		decode: func(c *Config, v json.RawMessage) error { return json.Unmarshal(v, &c.PinDir) },
		reset:  func(c *Config) { c.PinDir = filepath.Join(c.StateDir, pinSubdir) },
		check:  func(c *Config) error { return absBelowRoot(&c.PinDir) },
		shown:  func(c *Config) string { return c.PinDir },
	},
	{
		key:    "logFile",
		decode: func(c *Config, v json.RawMessage) error { return json.Unmarshal(v, &c.LogFile) },
		reset:  func(c *Config) { c.LogFile = "" },
		check: func(c *Config) error {
			if c.LogFile != "" && !filepath.IsAbs(c.LogFile) {
				return fmt.Errorf("%q must be an absolute path", c.LogFile)
			}
			return nil
		},
		shown: func(c *Config) string { return c.LogFile },
	},
	{
		key:    "logLevel",
		decode: func(c *Config, v json.RawMessage) error { return json.Unmarshal(v, &c.LogLevel) },
		reset:  func(c *Config) { c.LogLevel = DefaultLogLevel },
		check: func(c *Config) error {
			_, err := c.Level()
			return err
		},
		shown: func(c *Config) string { return c.LogLevel },
	},
	{
		key:    "pinNetns",
		decode: func(c *Config, v json.RawMessage) error { return json.Unmarshal(v, &c.PinNetns) },
		reset:  func(c *Config) { c.PinNetns = false },
		check:  func(*Config) error { return nil },
		shown:  func(c *Config) string { return fmt.Sprint(c.PinNetns) },
	},
	{
		// Wrapper mode: the main plugin's own config, run by leakguard.
		key: "delegate",
		decode: func(c *Config, v json.RawMessage) error {
			d, err := delegate.Parse(v, c.Name, c.CNIVersion)
			c.Delegate = d
			return err
		},
		reset: func(c *Config) { c.Delegate = nil },
		check: func(*Config) error { return nil },
		shown: func(c *Config) string {
			if c.Delegate == nil {
				return "no delegate"
			}
			return c.Delegate.Type
		},
	},
	{
		key: "cni.dev/attachments",
		decode: func(c *Config, v json.RawMessage) error {
			var list []types.GCAttachment
			if err := json.Unmarshal(v, &list); err != nil {
				return err
			}
			c.LegacyAttachments = list
			return nil
		},
		reset: func(c *Config) { c.LegacyAttachments = nil },
		check: func(*Config) error { return nil },
		shown: func(*Config) string { return "no list" },
	},
}

// apply decodes, defaults and checks f in c.
func (f field) apply(c *Config, raw map[string]json.RawMessage) error {
	f.reset(c)
	if v, ok := lookup(raw, f.key); ok && string(v) != "null" {
		if err := f.decode(c, v); err != nil {
			f.reset(c)
			return fmt.Errorf("cannot use %s: %v", abbrev(v), typeError(err))
		}
		if f.shown(c) == "" {
			f.reset(c) // an empty string means the default
		}
	}
	return f.check(c)
}

// lookup finds key as encoding/json does for struct fields: the exact key,
// else a case-insensitive match (the first in sorted order, so that the
// choice does not depend on map order).
func lookup(raw map[string]json.RawMessage, key string) (json.RawMessage, bool) {
	if v, ok := raw[key]; ok {
		return v, true
	}
	var keys []string
	for k := range raw {
		if strings.EqualFold(k, key) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, false
	}
	sort.Strings(keys)
	return raw[keys[0]], true
}

func typeError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("a JSON %s, want %s", te.Value, te.Type)
	}
	return err.Error()
}

// abbrev shows a raw value in an error, cut short: a delegate object can be
// long.
func abbrev(v json.RawMessage) string {
	s := strings.TrimSpace(string(v))
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

func absBelowRoot(p *string) error {
	if !filepath.IsAbs(*p) || filepath.Clean(*p) == "/" {
		return fmt.Errorf("%q must be an absolute path below /", *p)
	}
	*p = filepath.Clean(*p)
	return nil
}

// OwnKey returns key as leakguard spells it when it is one of leakguard's
// own configuration keys (matched case-insensitively, as the parse does),
// else "". Wrapper mode's delegate and the GC list are not settings an
// installer chains, so they are not counted.
func OwnKey(key string) string {
	for _, f := range fields {
		if f.key != "delegate" && f.key != "cni.dev/attachments" && strings.EqualFold(f.key, key) {
			return f.key
		}
	}
	return ""
}

// OwnKeys lists leakguard's own configuration keys (see OwnKey).
func OwnKeys() []string {
	var keys []string
	for _, f := range fields {
		if OwnKey(f.key) != "" {
			keys = append(keys, f.key)
		}
	}
	return keys
}
