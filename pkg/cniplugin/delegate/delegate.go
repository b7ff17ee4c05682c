// Package delegate is leakguard's wrapper mode: the main plugin's config is
// nested under leakguard's "delegate" key, and leakguard runs it through
// libcni's pkg/invoke, deciding what the main plugin sees (above all, which
// CNI_NETNS its DEL gets: the runtime's, a netns pin, or none).
package delegate

import (
	"encoding/json"
	"errors"
	"fmt"
)

// SelfType is leakguard's own plugin type: a delegate of that type would
// recurse.
const SelfType = "leakguard"

// Conf is a delegate as configured: its plugin type and its config object
// (without the name and cniVersion the wrapper gives it).
type Conf struct {
	Type string
	// Object is the delegate's config object as written.
	Object json.RawMessage
}

// Parse checks a "delegate" value: a JSON object with a plugin "type" that is
// not leakguard, and no "name" or "cniVersion" other than the wrapper's (the
// delegate is rendered with the wrapper's). The error says which rule broke.
func Parse(raw json.RawMessage, name, cniVersion string) (*Conf, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, errors.New("must be a JSON object: the main plugin's config")
	}
	var typ string
	if v, ok := obj["type"]; !ok || json.Unmarshal(v, &typ) != nil || typ == "" {
		return nil, errors.New(`has no plugin "type"`)
	}
	if typ == SelfType {
		return nil, errors.New(`"type" is leakguard itself`)
	}
	for key, outer := range map[string]string{"name": name, "cniVersion": cniVersion} {
		v, ok := obj[key]
		if !ok {
			continue
		}
		var s string
		if json.Unmarshal(v, &s) != nil || s != outer {
			return nil, fmt.Errorf("sets %s %s, not the wrapper's %q: the delegate is run with the wrapper's", key, v, outer)
		}
	}
	return &Conf{Type: typ, Object: raw}, nil
}
