package install

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Edits of one network config, on its raw JSON: name, cniVersion, key order
// and every field leakguard does not know are kept.

var (
	// errWrapped: leakguard already wraps the main plugin (wrapper mode);
	// chaining a second leakguard after it would run it twice.
	errWrapped = errors.New("leakguard wraps the main plugin in this chain (wrapper mode): left as it is")
	// errNoInlinePlugins: the conflist has no "plugins" array; libcni would
	// load its plugins from files beside it, after any inline entry, so an
	// entry added inline would not run last.
	errNoInlinePlugins = errors.New(`no inline "plugins" list (plugins loaded from separate files are not supported)`)
)

// chainEntry is what libcni reads of a chain entry: the type (encoding/json
// matches struct keys case-insensitively, so "Type" counts, as for the
// runtime) and, for leakguard, whether it wraps a delegate.
type chainEntry struct {
	Type     string          `json:"type"`
	Delegate json.RawMessage `json:"delegate"`
}

func readEntry(raw json.RawMessage) (chainEntry, error) {
	var c chainEntry
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("chain entry is not an object: %w", err)
	}
	return c, nil
}

func (c chainEntry) leakguard() bool { return c.Type == PluginType }
func (c chainEntry) wraps() bool {
	return c.leakguard() && len(c.Delegate) > 0 && string(c.Delegate) != "null"
}

// asList returns the config as a conflist object: a conflist as it is; a
// single-plugin config (.conf, .json) as libcni's ConfListFromConf reads it,
// a list of that one entry, whole, under the same name and cniVersion.
func asList(o object, isList bool) (object, error) {
	if isList {
		return o, nil
	}
	entry, err := o.compact()
	if err != nil {
		return nil, err
	}
	var list object
	if v, ok := o.get("cniVersion"); ok {
		list = append(list, member{Key: "cniVersion", Value: v})
	}
	if v, ok := o.get("name"); ok {
		list = append(list, member{Key: "name", Value: v})
	}
	plugins, err := marshalArray([]json.RawMessage{entry})
	if err != nil {
		return nil, err
	}
	return append(list, member{Key: "plugins", Value: plugins}), nil
}

// plugins returns a conflist's entries.
func plugins(list object) ([]json.RawMessage, error) {
	v, ok := list.get("plugins")
	if !ok {
		return nil, errNoInlinePlugins
	}
	a, err := rawArray(v)
	if err != nil {
		return nil, fmt.Errorf(`"plugins" is not an array: %w`, err)
	}
	return a, nil
}

// withEntry returns list with e as its last entry and no other chained
// leakguard entry (an old one is replaced, never duplicated); changed is
// false when list already is exactly that.
func withEntry(list object, e Entry) (object, bool, error) {
	ps, err := plugins(list)
	if err != nil {
		return nil, false, err
	}
	if len(ps) == 0 {
		return nil, false, errors.New(`empty "plugins" list`)
	}
	kept := make([]json.RawMessage, 0, len(ps)+1)
	ours := 0
	for _, p := range ps {
		c, err := readEntry(p)
		if err != nil {
			return nil, false, err
		}
		if c.wraps() {
			return nil, false, errWrapped
		}
		if c.leakguard() {
			ours++
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) == 0 {
		return nil, false, errors.New("no plugin but leakguard in the chain: not a primary network")
	}
	if ours == 1 && e.equal(ps[len(ps)-1]) {
		return list, false, nil
	}
	out, err := marshalArray(append(kept, e.raw()))
	if err != nil {
		return nil, false, err
	}
	return list.set("plugins", out), true, nil
}

// withoutEntry returns list without its chained leakguard entries and how
// many there were; an entry that wraps a delegate is kept (removing it would
// remove the main plugin).
func withoutEntry(list object) (object, int, error) {
	ps, err := plugins(list)
	if err != nil {
		return nil, 0, err
	}
	kept := make([]json.RawMessage, 0, len(ps))
	for _, p := range ps {
		c, err := readEntry(p)
		if err != nil {
			return nil, 0, err
		}
		if c.leakguard() && !c.wraps() {
			continue
		}
		kept = append(kept, p)
	}
	removed := len(ps) - len(kept)
	if removed == 0 {
		return list, 0, nil
	}
	out, err := marshalArray(kept)
	if err != nil {
		return nil, 0, err
	}
	return list.set("plugins", out), removed, nil
}

// chainHolds tells whether a chain runs leakguard where it does its work:
// as the last entry, or wrapping the main plugin.
func chainHolds(ps []json.RawMessage) bool {
	for i, p := range ps {
		c, err := readEntry(p)
		if err != nil {
			return false
		}
		if c.wraps() || (c.leakguard() && i == len(ps)-1 && i > 0) {
			return true
		}
	}
	return false
}

// mentions tells whether any entry of the chain runs leakguard at all.
func mentions(ps []json.RawMessage) bool {
	for _, p := range ps {
		if c, err := readEntry(p); err == nil && c.leakguard() {
			return true
		}
	}
	return false
}
