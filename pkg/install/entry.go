package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/leakguard/leakguard/pkg/cniplugin/pluginconf"
)

// PluginType is the CNI type of leakguard's entry, and the name of its
// binary in the CNI bin dir.
const PluginType = "leakguard"

// Entry is leakguard's entry in a chain: {"type":"leakguard"} followed by
// the operator's settings, in the order given.
type Entry struct {
	obj object
}

// ParseEntry validates the operator's settings for the entry (a JSON object
// of leakguard's own keys; "" means none) the way the plugin will read
// them: pluginconf's strict parse, which ADD uses. Keys that are not
// leakguard's are refused rather than carried into every node's chain, where
// the plugin would silently ignore a misspelt one.
func ParseEntry(pluginConfig string) (Entry, error) {
	e := Entry{obj: object{{Key: "type", Value: json.RawMessage(`"` + PluginType + `"`)}}}
	if strings.TrimSpace(pluginConfig) == "" {
		return e, nil
	}
	o, err := parseObject([]byte(pluginConfig))
	if err != nil {
		return Entry{}, fmt.Errorf("not a JSON object: %w", err)
	}
	seen := map[string]bool{}
	for _, m := range o {
		if m.Key == "type" {
			var t string
			if json.Unmarshal(m.Value, &t) != nil || t != PluginType {
				return Entry{}, fmt.Errorf("type %s: the entry is leakguard's (leave type out)", m.Value)
			}
			continue
		}
		own := pluginconf.OwnKey(m.Key)
		if own == "" {
			return Entry{}, fmt.Errorf("unknown key %q (leakguard's keys: %s)", m.Key, strings.Join(pluginconf.OwnKeys(), ", "))
		}
		if seen[own] {
			return Entry{}, fmt.Errorf("key %q given twice", own)
		}
		seen[own] = true
		e.obj = append(e.obj, m)
	}
	// The strict parse needs the fields a runtime injects into each entry.
	check := object{
		{Key: "cniVersion", Value: json.RawMessage(`"1.1.0"`)},
		{Key: "name", Value: json.RawMessage(`"leakguard-install-check"`)},
	}
	full, err := append(check, e.obj...).compact()
	if err != nil {
		return Entry{}, err
	}
	if _, err := pluginconf.Parse(full); err != nil {
		return Entry{}, errors.New(strings.TrimSpace(err.Error()))
	}
	return e, nil
}

// raw is the entry as one line of JSON.
func (e Entry) raw() json.RawMessage {
	b, err := e.withType().compact()
	if err != nil {
		// Every value was decoded from valid JSON by ParseEntry.
		return json.RawMessage(`{"type":"` + PluginType + `"}`)
	}
	return b
}

// String is the entry's JSON.
func (e Entry) String() string { return string(e.raw()) }

// equal tells whether a chain's raw entry says what e says (same keys and
// values; order and spacing do not matter).
func (e Entry) equal(raw json.RawMessage) bool {
	var a, b any
	if json.Unmarshal(e.raw(), &a) != nil || json.Unmarshal(raw, &b) != nil {
		return false
	}
	return reflect.DeepEqual(a, b)
}

// Config is the entry as the plugin reads it, defaults applied (its
// stateDir and pinDir tell the agent where the records are).
func (e Entry) Config() *pluginconf.Config {
	full, err := append(object{
		{Key: "cniVersion", Value: json.RawMessage(`"1.1.0"`)},
		{Key: "name", Value: json.RawMessage(`"leakguard-install-check"`)},
	}, e.withType()...).compact()
	if err == nil {
		if c, err := pluginconf.Parse(full); err == nil {
			return c
		}
	}
	c, _ := pluginconf.Parse([]byte(`{"cniVersion":"1.1.0","name":"leakguard-install-check","type":"leakguard"}`))
	return c
}

// withType is the entry's members, the zero Entry being {"type":"leakguard"}.
func (e Entry) withType() object {
	if len(e.obj) == 0 {
		return object{{Key: "type", Value: json.RawMessage(`"` + PluginType + `"`)}}
	}
	return e.obj
}
