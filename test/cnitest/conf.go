package cnitest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

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
	// WithoutLeakguard drops the leakguard entry: the control chain.
	WithoutLeakguard bool
}

// ConfList is the part of a conflist the tests look at.
type ConfList struct {
	CNIVersion string             `json:"cniVersion"`
	Name       string             `json:"name"`
	Plugins    []types.PluginConf `json:"plugins"`
}

// LoadConfList reads a conflist and applies the checks libcni's
// ConfListFromFile applies (name, plugins, each with a type). libcni itself
// is not imported here, to keep its tracing dependencies out of go.mod; every
// cnitool run loads the copies through libcni anyway.
func LoadConfList(path string) (*ConfList, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	list := &ConfList{}
	if err := json.Unmarshal(raw, list); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
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

// WriteConf copies the conflist src into dir with opts applied and returns
// the copy as loaded back.
func WriteConf(src, dir string, opts ConfOptions) (*ConfList, error) {
	if _, err := LoadConfList(src); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(src)
	if err != nil {
		return nil, err
	}
	var list map[string]any
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("parse %s: %w", src, err)
	}
	if opts.CNIVersion != "" {
		list["cniVersion"] = opts.CNIVersion
	}
	plugins, _ := list["plugins"].([]any)
	kept := plugins[:0]
	for _, p := range plugins {
		plugin, _ := p.(map[string]any)
		if plugin == nil {
			return nil, fmt.Errorf("%s: plugin entry is not an object", src)
		}
		if plugin["type"] == "leakguard" {
			if opts.WithoutLeakguard {
				continue
			}
			if opts.StateDir == "" {
				return nil, fmt.Errorf("%s: refusing to copy a leakguard chain without a temporary stateDir", src)
			}
			plugin["stateDir"] = opts.StateDir
			if opts.LogFile != "" {
				plugin["logFile"] = opts.LogFile
			}
			if opts.LogLevel != "" {
				plugin["logLevel"] = opts.LogLevel
			}
		}
		if ipam, _ := plugin["ipam"].(map[string]any); ipam != nil && ipam["type"] == "host-local" {
			if opts.IPAMDataDir == "" {
				return nil, fmt.Errorf("%s: refusing to copy a host-local chain without a temporary dataDir", src)
			}
			ipam["dataDir"] = opts.IPAMDataDir
		}
		kept = append(kept, plugin)
	}
	list["plugins"] = kept

	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, err
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, out, 0o644); err != nil {
		return nil, err
	}
	return LoadConfList(dst)
}
