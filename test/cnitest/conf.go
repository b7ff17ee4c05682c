package cnitest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// ConfOptions say how a copy of an example conflist differs from the original.
type ConfOptions struct {
	// StateDir replaces leakguard's stateDir (never the real /run/leakguard).
	StateDir string
	// LogFile, when set, replaces leakguard's logFile; LogLevel likewise.
	LogFile  string
	LogLevel string
	// IPAMDataDir replaces host-local's dataDir (never the real /var/lib/cni).
	IPAMDataDir string
	// CNIVersion, when set, replaces the list's cniVersion.
	CNIVersion string
	// Name, when set, replaces the network name: libcni's result cache
	// (/var/lib/cni/results) is shared by every test, and `cnitool gc` DELs
	// every cached attachment of its network name.
	Name string
	// WithoutLeakguard drops the leakguard entry: the control chain. A
	// wrapper config cannot be copied without leakguard.
	WithoutLeakguard bool
	// PinNetns, when set, replaces leakguard's pinNetns.
	PinNetns *bool
	// AsList writes a .conf as the one-element .conflist libcni turns it
	// into when it loads it (Podman 4 reads only .conflist files).
	AsList bool
	// Main, when set, is merged into the main plugin's config: the first
	// plugin of a chain that is not leakguard, or a wrapper's delegate.
	Main map[string]any
}

// ConfList is the part of a conflist the tests look at. A single-plugin
// .conf is loaded as libcni up-converts it: a list of that one plugin.
type ConfList struct {
	CNIVersion string             `json:"cniVersion"`
	Name       string             `json:"name"`
	Plugins    []types.PluginConf `json:"plugins"`
	// Single is true for a .conf (one plugin config, no "plugins" list).
	Single bool `json:"-"`
}

// LoadConfList reads a conflist, or a single-plugin .conf, and applies the
// checks libcni's loaders apply (name, plugins, each with a type). libcni
// itself is not imported here, to keep its tracing dependencies out of
// go.mod; every cnitool run loads the copies through libcni anyway.
func LoadConfList(path string) (*ConfList, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	list := &ConfList{}
	if err := json.Unmarshal(raw, list); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if filepath.Ext(path) == ".conf" {
		var p types.PluginConf
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		if list.Plugins != nil {
			return nil, fmt.Errorf("%s: a .conf holds one plugin config, not a plugins list", path)
		}
		list.Plugins, list.Single = []types.PluginConf{p}, true
	}
	if list.Name == "" {
		return nil, fmt.Errorf("%s: no name", path)
	}
	if len(list.Plugins) == 0 {
		return nil, fmt.Errorf("%s: no plugins", path)
	}
	for i, p := range list.Plugins {
		if p.Type == "" {
			return nil, fmt.Errorf("%s: plugin %d has no type", path, i)
		}
	}
	return list, nil
}

// WriteConf copies the conflist (or wrapper .conf) src into dir with opts
// applied and returns the copy as loaded back. In a wrapper .conf the
// leakguard options apply to the outer config and the IPAM one to its
// delegate.
func WriteConf(src, dir string, opts ConfOptions) (*ConfList, error) {
	list, err := LoadConfList(src)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(src)
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("parse %s: %w", src, err)
	}
	if opts.CNIVersion != "" {
		obj["cniVersion"] = opts.CNIVersion
	}
	if opts.Name != "" {
		obj["name"] = opts.Name
	}
	if list.Single {
		if opts.WithoutLeakguard && obj["type"] == "leakguard" {
			return nil, fmt.Errorf("%s: a wrapper config cannot be copied without leakguard", src)
		}
		delegate, _ := obj["delegate"].(map[string]any)
		if delegate == nil {
			merge(obj, opts.Main)
		} else {
			merge(delegate, opts.Main)
			if err := rewritePlugin(src, delegate, opts); err != nil {
				return nil, err
			}
		}
		if err := rewritePlugin(src, obj, opts); err != nil {
			return nil, err
		}
	} else {
		plugins, _ := obj["plugins"].([]any)
		kept := plugins[:0]
		for _, p := range plugins {
			plugin, _ := p.(map[string]any)
			if plugin == nil {
				return nil, fmt.Errorf("%s: plugin entry is not an object", src)
			}
			if plugin["type"] == "leakguard" && opts.WithoutLeakguard {
				continue
			}
			if plugin["type"] != "leakguard" {
				merge(plugin, opts.Main)
				opts.Main = nil // the main plugin only
			}
			if err := rewritePlugin(src, plugin, opts); err != nil {
				return nil, err
			}
			kept = append(kept, plugin)
		}
		obj["plugins"] = kept
	}

	dst := filepath.Join(dir, filepath.Base(src))
	if list.Single && opts.AsList {
		plugin := map[string]any{}
		merge(plugin, obj)
		delete(plugin, "name")
		delete(plugin, "cniVersion")
		obj = map[string]any{"cniVersion": obj["cniVersion"], "name": obj["name"], "plugins": []any{plugin}}
		dst = strings.TrimSuffix(dst, filepath.Ext(dst)) + ".conflist"
	}
	out, err := json.MarshalIndent(obj, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(dst, out, 0o644); err != nil {
		return nil, err
	}
	return LoadConfList(dst)
}

// rewritePlugin points one plugin config's state at the test's temporary
// directories: leakguard's state dir and log, host-local's data dir.
func rewritePlugin(src string, plugin map[string]any, opts ConfOptions) error {
	if plugin["type"] == "leakguard" {
		if opts.StateDir == "" {
			return fmt.Errorf("%s: refusing to copy a leakguard config without a temporary stateDir", src)
		}
		plugin["stateDir"] = opts.StateDir
		if opts.LogFile != "" {
			plugin["logFile"] = opts.LogFile
		}
		if opts.LogLevel != "" {
			plugin["logLevel"] = opts.LogLevel
		}
		if opts.PinNetns != nil {
			plugin["pinNetns"] = *opts.PinNetns
		}
	}
	if ipam, _ := plugin["ipam"].(map[string]any); ipam != nil && ipam["type"] == "host-local" {
		if opts.IPAMDataDir == "" {
			return fmt.Errorf("%s: refusing to copy a host-local config without a temporary dataDir", src)
		}
		ipam["dataDir"] = opts.IPAMDataDir
	}
	return nil
}

// merge sets src's keys in dst (whole values: an "ipam" replaces the
// delegate's, and then gets the test's dataDir like any other).
func merge(dst, src map[string]any) {
	for k, v := range src {
		dst[k] = v
	}
}
