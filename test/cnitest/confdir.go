package cnitest

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// LoadFirst loads a conf dir the way containerd's go-cni does: the files
// with a .conf, .conflist or .json extension, sorted; the first one must
// load (go-cni fails the whole dir on the first file it cannot load; it does
// not skip it) and have at least one plugin. It returns that config and its
// file name.
func LoadFirst(dir string) (*libcni.NetworkConfigList, string, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, "", err
	}
	if len(files) == 0 {
		return nil, "", fmt.Errorf("no network config in %s", dir)
	}
	sort.Strings(files)
	first := files[0]
	var list *libcni.NetworkConfigList
	if strings.HasSuffix(first, ".conflist") {
		list, err = libcni.ConfListFromFile(first)
	} else {
		var conf *libcni.NetworkConfig
		conf, err = libcni.ConfFromFile(first) //nolint:staticcheck // what go-cni calls for .conf and .json
		if err == nil {
			if conf.Network.Type == "" {
				return nil, "", fmt.Errorf("%s: no type", first)
			}
			list, err = libcni.ConfListFromConf(conf) //nolint:staticcheck // as go-cni
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", filepath.Base(first), err)
	}
	if len(list.Plugins) == 0 {
		return nil, "", fmt.Errorf("%s: no plugins", filepath.Base(first))
	}
	return list, filepath.Base(first), nil
}

// PluginTypes lists a chain's plugin types in order.
func PluginTypes(list *libcni.NetworkConfigList) []string {
	var ts []string
	for _, p := range list.Plugins {
		ts = append(ts, p.Network.Type)
	}
	return ts
}
